"""A GPU with too little free memory (run by .ci/gpu-check where there is a GPU)."""

import contextlib

import numpy as np
import pytest
import torch

from pipeline.benchmarks.encoding import shop_photos
from pipeline.encoder import Encoder, ModelSpec, ModelUnavailable

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@contextlib.contextmanager
def gpu_memory_left(size: int):
    """Take all but `size` bytes of the GPU's free memory for the duration."""
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    free, _ = torch.cuda.mem_get_info()
    taken = torch.empty(max(free - size, 0), dtype=torch.uint8, device="cuda")
    try:
        yield
    finally:
        del taken
        torch.cuda.empty_cache()


def test_a_batch_the_gpu_has_no_room_for_is_encoded_in_parts(settings, caplog):
    settings.MEEPO_DEVICE = "cuda"
    encoder = Encoder(ModelSpec("ViT-B-32", None))
    batch = encoder.stack([encoder.pixels_from_bytes(data) for data in shop_photos(256)])
    expected = np.concatenate([encoder.encode_pixels(batch[start : start + 16]) for start in range(0, 256, 16)])
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    encoder.encode_pixels(batch[:32])
    needed_for_32 = torch.cuda.max_memory_allocated() - before

    with gpu_memory_left(3 * needed_for_32):
        vectors = encoder.encode_pixels(batch)

    assert 0 < encoder.fits_on_gpu < 256
    assert "no room for 256 images at once" in caplog.text
    assert vectors.shape == expected.shape
    assert (vectors * expected).sum(axis=1).min() > 0.999  # each photo's own vector, in order


def test_a_gpu_without_room_for_the_model_says_so(settings):
    settings.MEEPO_DEVICE = "cuda"

    with gpu_memory_left(64 * 2**20), pytest.raises(ModelUnavailable) as refused:
        Encoder(ModelSpec("ViT-B-32", None))

    assert str(refused.value).startswith("The GPU has too little free memory for ViT-B-32")
    assert "MEEPO_DEVICE=cpu" in str(refused.value)
