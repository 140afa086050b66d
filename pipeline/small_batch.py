"""Hand-written kernels (issue #4): linear layers over a few rows, for the text tower of one query,
and the bf16 image tower's attention.

`make setup` builds it from small_batch.cpp with torch's C++ extension tooling (g++, ninja, the
Python headers): `python -m pipeline.small_batch`. Web workers only import the built library, so
they never compile, and never wait on the build's lock file. Where it is not built from this very
source, or the CPU has no AVX-512, the text tower runs oneDNN's kernel instead, and the image tower
torch's attention.
"""

import functools
import hashlib
import importlib.util
import logging
import sys
from pathlib import Path

SOURCE = Path(__file__).with_suffix(".cpp")
# Named after its source's hash, so that a library built from another version of it (copied with
# its dates, say) is never loaded in its place.
NAME = f"meepo_small_batch_{hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:12]}"
# Beside the packages it is compiled against: a new virtualenv gets its own build.
BUILD_DIR = Path(sys.prefix) / "meepo-kernels"
LIBRARY = BUILD_DIR / f"{NAME}.so"

logger = logging.getLogger(__name__)


def build() -> None:
    import torch  # noqa: F401 - cpp_extension needs it loaded

    # Importing it logs a CUDA_HOME notice that means nothing on a CPU.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    from torch.utils import cpp_extension

    BUILD_DIR.mkdir(exist_ok=True)
    # Only this command builds, so a lock file here was left by a build that was killed.
    (BUILD_DIR / "lock").unlink(missing_ok=True)
    for old in BUILD_DIR.glob("meepo_small_batch*.so"):
        if old != LIBRARY:
            old.unlink()
    cpp_extension.load(
        NAME, [str(SOURCE)], extra_cflags=["-O3", "-mavx512f", "-fopenmp"], build_directory=str(BUILD_DIR)
    )


@functools.cache
def load():
    """The built kernel module (BLOCK, pack, linear, causal_tower, encode_text, attention), or None
    where it cannot run."""
    import torch

    if not torch.cpu._is_avx512_supported():
        return None
    if not LIBRARY.exists():
        logger.warning("The small-batch kernel is not built (run: make setup); text queries use oneDNN.")
        return None
    try:
        spec = importlib.util.spec_from_file_location(NAME, LIBRARY)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except ImportError as error:  # built against another torch
        logger.warning("The small-batch kernel does not load (%s; run: make setup); text queries use oneDNN.", error)
        return None
    return module


if __name__ == "__main__":
    try:
        build()
        print(f"small-batch kernel: built in {BUILD_DIR}")
    except Exception as error:  # optional: say why and let the set-up go on
        print(f"small-batch kernel: not built ({error}); text queries will use oneDNN")
