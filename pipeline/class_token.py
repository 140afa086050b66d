"""An image tower whose last block runs for the class token only (issue #4).

ViT-B-32 pools its class token (position 0) after the last block. That block's attention still needs
the keys and values of all 50 positions, but its output projection, layer norm and MLP matter for
the class token alone: skipping them for the other 49 is 4-5% of a batch of photos on a CPU (ViT-B-32,
bf16, 2-core AMD EPYC: 804 against 841 ms for 32 photos), at a cosine of 0.9999998 to the full tower
(the same arithmetic for that row; int8's dynamic quantisation then scales that row alone: 0.99998).
"""

import open_clip
import torch


class ClassTokenTower(open_clip.transformer.Transformer):
    def forward(self, x, attn_mask=None):
        if attn_mask is not None:  # not in open_clip's image towers; a mask would need cutting too
            return super().forward(x, attn_mask=attn_mask)
        *earlier, last = self.resblocks
        for block in earlier:
            x = block(x)
        normed = last.ln_1(x)
        token = x[:, :1] + last.ls_1(last.attn(normed[:, :1], normed, normed, need_weights=False)[0])
        return token + last.ls_2(last.mlp(last.ln_2(token)))


def pool_class_token_only(visual) -> bool:
    """Let the last block of a ViT that pools its class token run for that token only. Returns whether
    it does (other towers, pools and blocks are left as they are)."""
    from open_clip.transformer import ResidualAttentionBlock

    from pipeline.packed_layers import Int8SelfAttention, PackedSelfAttention

    transformer = getattr(visual, "transformer", None)
    fits = (
        isinstance(visual, open_clip.transformer.VisionTransformer)
        and visual.pool_type == "tok"
        and visual.attn_pool is None
        and not visual.output_tokens
        and type(transformer) is open_clip.transformer.Transformer
        and transformer.batch_first
        and len(transformer.resblocks) > 0
        and all(
            type(block) is ResidualAttentionBlock
            and not hasattr(block, "ln_1_kv")
            and type(block.attn) in (torch.nn.MultiheadAttention, PackedSelfAttention, Int8SelfAttention)
            for block in transformer.resblocks
        )
    )
    if fits:
        transformer.__class__ = ClassTokenTower
    return fits
