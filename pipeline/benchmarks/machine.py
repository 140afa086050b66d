import os
import platform
from pathlib import Path


def describe() -> dict:
    """What the figures were measured on: they mean little without it."""
    import faiss
    import torch

    flags = set()
    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
            if line.startswith("model name") and not model:
                model = line.split(":", 1)[1].strip()
    wanted = ["avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16"]
    return {
        "cpu": model or platform.processor(),
        "cores": os.cpu_count(),
        "cpu_flags": [flag for flag in wanted if flag in flags],
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "faiss": faiss.__version__,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
