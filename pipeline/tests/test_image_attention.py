import pytest
import torch
import torch.nn.functional as F

from pipeline import small_batch
from pipeline.packed_layers import PackedSelfAttention

needs_avx512 = pytest.mark.skipif(not torch.cpu._is_avx512_supported(), reason="the kernel needs AVX-512")


def torch_attention(qkv: torch.Tensor, heads: int) -> torch.Tensor:
    batch, length, width = qkv.shape[0], qkv.shape[1], qkv.shape[2] // 3
    q, k, v = qkv.view(batch, length, 3, heads, width // heads).permute(2, 0, 3, 1, 4)
    return F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(batch, length, width)


@needs_avx512
@pytest.mark.parametrize(("batch", "length", "heads", "head"), [(1, 50, 12, 64), (3, 197, 2, 64), (2, 17, 2, 32)])
@pytest.mark.parametrize("length_override", [None, 1, 16, 33])
def test_the_kernel_computes_attention_in_fp32(batch, length, heads, head, length_override):
    length = length_override or length
    generator = torch.Generator().manual_seed(batch * length + heads)
    qkv = (torch.randn(batch, length, 3 * heads * head, generator=generator) * 2).to(torch.bfloat16)

    out = small_batch.load().attention(qkv, heads)

    expected = torch_attention(qkv.float(), heads)
    assert out.dtype == torch.bfloat16 and out.shape == expected.shape
    # Only the final rounding to bf16 differs: half a step of it (2^-8 relative) at most.
    assert torch.allclose(out.float(), expected, rtol=2**-8, atol=1e-6)
    error = (out.float() - expected).abs().max()
    assert error <= (torch_attention(qkv, heads).float() - expected).abs().max()  # torch's bf16 attention


@needs_avx512
def test_the_attention_kernel_refuses_what_it_cannot_compute():
    attention = small_batch.load().attention
    with pytest.raises(RuntimeError, match="bf16"):
        attention(torch.ones(1, 4, 96), 2)
    with pytest.raises(RuntimeError, match="multiple of 16"):
        attention(torch.ones(1, 4, 3 * 24, dtype=torch.bfloat16), 3)
    with pytest.raises(RuntimeError, match="whole heads"):
        attention(torch.ones(1, 4, 3 * 64, dtype=torch.bfloat16), 5)


@needs_avx512
def test_the_bf16_image_tower_attends_through_the_kernel_with_torch_s_result(settings):
    from pipeline.encoder import Encoder, ModelSpec

    settings.MEEPO_CPU_IMAGE_PRECISION = "bf16"
    encoder = Encoder(ModelSpec("meepo-tiny", None))
    blocks = encoder.model.visual.transformer.resblocks
    pixels = torch.randn(4, 3, encoder.image_size, encoder.image_size, generator=torch.Generator().manual_seed(5))

    assert all(type(block.attn) is PackedSelfAttention and block.attn.attention for block in blocks)
    fused = encoder.encode_pixels(pixels)
    for block in blocks:
        block.attn.attention = None
    plain = encoder.encode_pixels(pixels)

    assert (fused * plain).sum(axis=1).min() > 0.9999
