"""Loading the model from a weights file, as every web worker does at start (two at once on a 2-core
host): naive (open_clip as the seed articles call it) against Meepo's Encoder, each in a fresh
process, from the same zip checkpoint (what open_clip_pytorch_model.bin downloads are)."""

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

LOAD = """
import json, sys, time
import django
django.setup()
import open_clip, torch
from pipeline.encoder import Encoder, ModelSpec
name, path, naive = sys.argv[1], sys.argv[2], sys.argv[3] == "naive"
def anonymous():
    return int(open("/proc/self/status").read().split("RssAnon:")[1].split()[0]) // 1024
before = anonymous()
start = time.perf_counter()
if naive:
    loaded = open_clip.create_model_and_transforms(name, pretrained=path)
else:
    loaded = Encoder(ModelSpec(name, path))
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "anonymous_before_mb": before, "anonymous_after_mb": anonymous()}))
"""


def model_load(name: str, env: dict) -> dict:
    """Seconds to load; anonymous memory (what two workers cannot share; a mapped file's pages are
    the page cache's, shared and reclaimable) above what the imports took, at the peak and kept."""
    import open_clip
    import torch

    from pipeline.encoder import TINY_MODEL_SEED

    with tempfile.TemporaryDirectory(prefix="meepo-bench-") as folder:
        checkpoint = Path(folder) / "open_clip_pytorch_model.bin"
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(TINY_MODEL_SEED)
            torch.save(open_clip.create_model(name).state_dict(), checkpoint)
        os.sync()
        result = {"model": name, "checkpoint_mb": round(checkpoint.stat().st_size / 2**20)}
        # Taking turns, twice each: a slow minute of the machine hits both.
        runs = {"naive": [], "meepo": []}
        for _ in range(2):
            for side in runs:
                runs[side].append(_load_in_a_fresh_process(name, checkpoint, side, env))
        for side, measured in runs.items():
            result[side] = {
                "seconds": round(min(run["seconds"] for run in measured), 2),
                "load_anonymous_mb": max(run["peak_anonymous_mb"] - run["anonymous_before_mb"] for run in measured),
                "kept_anonymous_mb": max(run["anonymous_after_mb"] - run["anonymous_before_mb"] for run in measured),
                "peak_rss_mb": max(run["peak_rss_mb"] for run in measured),
            }
    result["anonymous_ratio"] = round(result["naive"]["load_anonymous_mb"] / result["meepo"]["load_anonymous_mb"], 2)
    return result


def _load_in_a_fresh_process(name: str, checkpoint: Path, side: str, env: dict) -> dict:
    process = subprocess.Popen(
        [sys.executable, "-c", LOAD, name, str(checkpoint), side],
        cwd=ROOT,
        env={**env, "DJANGO_SETTINGS_MODULE": "meepo.settings"},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    # Sampled from here, not by a thread in the loading process, which torch.load could keep from
    # running (the GIL) right at the peak.
    peak_anonymous = peak_rss = 0
    while process.poll() is None:
        try:
            status = _status(process.pid)
        except (FileNotFoundError, ProcessLookupError):
            break
        peak_anonymous = max(peak_anonymous, status.get("RssAnon", 0))
        peak_rss = max(peak_rss, status.get("VmHWM", 0))
        time.sleep(0.002)
    if process.wait():
        raise RuntimeError(f"loading {name} ({side}) failed with exit status {process.returncode}")
    run = json.loads(process.stdout.read())
    return {**run, "peak_anonymous_mb": peak_anonymous // 1024, "peak_rss_mb": peak_rss // 1024}


def _status(pid: int) -> dict:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("RssAnon", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields
