"""The text tower's linear layers through oneDNN instead of torch's default BLAS (issue #4).

A text query multiplies about 8 token vectors by each weight matrix. For that shape torch's default
fp32 path (MKL's sgemm) read the weights at 7 GB/s on an AMD EPYC whose memory gives 46 GB/s, and
oneDNN's linear at 18 GB/s: a text query took 14–18 ms instead of 24–33 ms. Same fp32 arithmetic,
only the summation order differs (max difference to the naive vector 2.6e-7).
"""

import torch
import torch.nn.functional as F


def _linear(x, weight, bias):
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


class OneDnnLinear(torch.nn.Linear):
    def forward(self, x):
        return _linear(x, self.weight, self.bias)


class OneDnnSelfAttention(torch.nn.MultiheadAttention):
    """nn.MultiheadAttention's inference path for self-attention (batch first), with oneDNN linears."""

    def forward(self, query, key=None, value=None, need_weights=False, attn_mask=None):
        batch, length, width = query.shape
        heads = self.num_heads
        qkv = _linear(query, self.in_proj_weight, self.in_proj_bias)
        q, k, v = qkv.view(batch, length, 3, heads, width // heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        out = out.transpose(1, 2).reshape(batch, length, width)
        return _linear(out, self.out_proj.weight, self.out_proj.bias), None


def route_text_tower(model) -> None:
    """Switch the text tower's blocks to oneDNN where they have the plain CLIP shape; leave them as
    they are where they don't or this torch has no oneDNN linear."""
    from open_clip.transformer import ResidualAttentionBlock

    blocks = list(model.transformer.resblocks)
    plain = model.transformer.batch_first and all(
        type(block) is ResidualAttentionBlock
        and type(block.attn) is torch.nn.MultiheadAttention
        and block.attn._qkv_same_embed_dim
        and block.attn.in_proj_bias is not None
        and not hasattr(block, "ln_1_kv")
        for block in blocks
    )
    if not plain or not _available():
        return
    # Swapping the class keeps every parameter (and the state dict) as it is.
    for block in blocks:
        block.attn.__class__ = OneDnnSelfAttention
        for layer in block.mlp:
            if type(layer) is torch.nn.Linear:
                layer.__class__ = OneDnnLinear


def _available() -> bool:
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        _linear(torch.ones(1, 2), torch.ones(3, 2), torch.zeros(3))
    except (RuntimeError, AttributeError, NotImplementedError):
        return False
    return True
