"""The towers' linear layers with weights packed once for a faster kernel than torch's default (issue #4).

Two kernels, each where it wins:
- the text tower (fp32; a query is about 8 token vectors, so its time is reading 150 MB of weights):
  Meepo's small-batch kernel (pipeline/small_batch.cpp) where it is built and the CPU has AVX-512,
  else oneDNN's. For the 48 linear layers of ViT-B-32's text tower and 8 rows (2-core AMD EPYC):
  torch's default fp32 path (MKL's sgemm) 20.8 ms with two threads; oneDNN with weights packed in
  its blocked layout 8.7-12 ms with two threads, 14-18 ms with one; the small-batch kernel 5.1-5.8 ms
  with two, 8.8 ms with one. A query then goes from token ids to its normalised vector in one call
  (CausalTextTower.encode): Python's per-operation overhead had been 1.5-2 ms of a query.
  The opt-in bf16 text tower keeps the kernel with bf16 weights (fp32 activations and sums): 2.7-3.1
  ms for those 48 layers at 3 rows (a one-word query) against 3.5-5.8 in fp32; at 8 rows the
  kernel is bound by its arithmetic and both take about 5 ms.
- the bf16 image tower: oneDNN (the attention's fused bias-and-rescale and the separate GELU were
  slow in bf16): a photo query took 50-67 ms instead of 67-91 ms, a batch of 32 photos 6% less time,
  at a cosine of 0.99995 to torch's own bf16 layers. Its attention runs Meepo's kernel where it is
  built: in fp32 from the bf16 qkv, 2.6-5.3 ms a layer for 32 photos where torch's bf16 flash
  attention took 4.5-8 ms (50 positions are too few for its tiling).

The packed weight replaces the plain one (no second copy). The MLP's GELU runs right after the first
linear layer (the same erf GELU). Same arithmetic as torch's layers, only the summation order differs
(max difference to the naive text vector about 3e-7).
"""

import warnings

import open_clip
import torch
import torch.nn.functional as F

from pipeline import small_batch


class OneDnn:
    pack = staticmethod(torch.ops.mkldnn._reorder_linear_weight)

    @staticmethod
    def linear(x, weight, bias, gelu: str | None):
        activation = "none" if gelu is None else "gelu"
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, activation, [], gelu or "")

    @staticmethod
    def runs(dtype: torch.dtype) -> bool:
        """Whether this torch and CPU run oneDNN's packed linear in this dtype (bf16 needs AVX-512 or
        AMX; MEEPO_CPU_*_PRECISION=bf16 may be set on a CPU without them)."""
        if not torch.backends.mkldnn.is_available():
            return False
        try:
            weight = torch.ops.mkldnn._reorder_linear_weight(torch.ones(3, 2, dtype=dtype))
            OneDnn.linear(torch.ones(1, 2, dtype=dtype), weight, torch.zeros(3, dtype=dtype), "none")
        except (RuntimeError, AttributeError, NotImplementedError):
            return False
        return True


class SmallBatch:
    def __init__(self, kernel, weights: torch.dtype = torch.float32):
        self.kernel = kernel
        self.weights = weights

    def pack(self, weight):
        return self.kernel.pack(weight, bf16=self.weights == torch.bfloat16)

    def linear(self, x, weight, bias, gelu: str | None):
        y = self.kernel.linear(x, weight, bias, gelu=gelu == "none", quick_gelu=gelu == "quick")
        return y if gelu in (None, "none", "quick") else F.gelu(y, approximate=gelu)

    def fits(self, transformer) -> bool:
        return transformer.width % self.kernel.BLOCK == 0 and all(
            block.mlp.c_fc.out_features % self.kernel.BLOCK == 0 for block in transformer.resblocks
        )


class PackedLinear(torch.nn.Linear):
    kernel: OneDnn | SmallBatch
    # GELU's approximation ("none" is the exact erf) when it follows the layer; "quick": QuickGELU.
    gelu: str | None = None

    def forward(self, x):
        return self.kernel.linear(x, self.weight, self.bias, self.gelu)


class PackedSelfAttention(torch.nn.MultiheadAttention):
    """nn.MultiheadAttention's inference path for self-attention (batch first), with packed weights."""

    kernel: OneDnn | SmallBatch
    attention = None  # Meepo's kernel for bf16 attention without a mask, where it is built

    def forward(self, query, key=None, value=None, need_weights=False, attn_mask=None):
        """Self-attention of `key`'s positions (query is key), or for its first few only (query, a
        shorter key[:, :n], as in ClassTokenTower's last block)."""
        positions = query if key is None else key
        batch, length, width = positions.shape
        heads = self.num_heads
        qkv = self.in_projection(positions)
        q, k, v = qkv.view(batch, length, 3, heads, width // heads).permute(2, 0, 3, 1, 4)
        if query.shape[1] < length:
            # In fp32 like the kernel's attention, which the full tower would have run for these rows.
            q = q[:, :, : query.shape[1]]
            out = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=attn_mask).to(q.dtype)
        elif attn_mask is None and self.attention is not None:
            return self.out_proj(self.attention(qkv, heads)), None
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.out_proj(out.transpose(1, 2).reshape(batch, q.shape[2], width)), None

    def in_projection(self, positions):
        return self.kernel.linear(positions, self.in_proj_weight, self.in_proj_bias, None)


class Int8SelfAttention(PackedSelfAttention):
    """The same attention with both projections as nn.Linear layers, for torch's dynamic int8
    quantisation to convert: it leaves nn.MultiheadAttention's in fp32 (its forward reads the
    weights directly), a third of a ViT block's multiply-adds."""

    def in_projection(self, positions):
        return self.in_proj(positions)


def quantise_to_int8(tower: torch.nn.Module) -> None:
    """Every linear layer of an open_clip tower as int8, in place (weights per output channel; the
    activations with one scale per call, found as they come), the attention's projections included
    where its Transformer's blocks have the plain CLIP shape."""
    transformer = getattr(tower, "transformer", None)
    if isinstance(transformer, open_clip.transformer.Transformer) and _plain_blocks(transformer):
        for block in transformer.resblocks:
            attention = block.attn
            attention.__class__ = Int8SelfAttention
            attention.in_proj = torch.nn.Linear(attention.embed_dim, 3 * attention.embed_dim, device="meta")
            attention.in_proj.weight, attention.in_proj.bias = attention.in_proj_weight, attention.in_proj_bias
            del attention.in_proj_weight, attention.in_proj_bias
            attention.out_proj.__class__ = torch.nn.Linear  # from NonDynamicallyQuantizableLinear, which adds nothing
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's notice that this API moves to torchao
        torch.ao.quantization.quantize_dynamic(
            tower, {torch.nn.Linear: torch.ao.quantization.per_channel_dynamic_qconfig}, inplace=True
        )


class CausalTextTower(open_clip.transformer.Transformer):
    """A causal text tower whose blocks run in one call to the small-batch kernel."""

    tower_tensors: list[torch.Tensor]
    quick_gelu = False  # the MLP's activation: QuickGELU (OpenAI's weights) rather than the erf GELU
    start_token = -1
    start = torch.empty(0)

    def remember_start(self, model, token: int) -> None:
        """Keep the keys and values of the start-of-text token at position 0, which every query
        begins with and no later token changes (the tower is causal): each query then runs one
        position fewer, the same result bit for bit."""
        self.start = self.kernel.start_of_text(
            token,
            model.token_embedding.weight,
            model.positional_embedding,
            self.tower_tensors,
            self.heads,
            self.eps,
            self.quick_gelu,
        )
        self.start_token = token

    def forward(self, x, attn_mask=None):
        # Installed on causal text towers only, which open_clip always calls with the causal mask.
        return self.kernel.causal_tower(x, self.tower_tensors, self.heads, self.eps, self.quick_gelu)

    def encode(self, model, tokens):
        """open_clip's encode_text, normalised, in one call: the tower runs up to the last end-of-text
        token only (it is causal and pools there, so the padding after it cannot change the result)."""
        norm = model.ln_final
        return self.kernel.encode_text(
            tokens,
            model.token_embedding.weight,
            model.positional_embedding,
            self.tower_tensors,
            self.heads,
            self.eps,
            self.quick_gelu,
            norm.weight,
            norm.bias,
            norm.eps,
            model.text_projection,
            self.start_token,
            self.start,
        )

    @staticmethod
    def encodes(model) -> bool:
        """Whether `encode` does exactly what the model's own text path does."""
        if type(getattr(model, "transformer", None)) is not CausalTextTower:
            return False  # models with another text tower (open_clip's CustomTextCLIP) have no ln_final
        norm = model.ln_final
        projection = model.text_projection
        return (
            getattr(model, "text_pool_type", None) == "argmax"
            and type(model.token_embedding) is torch.nn.Embedding
            and isinstance(norm, torch.nn.LayerNorm)
            and norm.elementwise_affine
            and norm.bias is not None
            and model.positional_embedding.dtype == torch.float32
            and isinstance(projection, torch.Tensor)
            and projection.dtype == torch.float32
            and projection.dim() == 2
        )


def route_transformer(transformer, *, causal: bool = False, weights: torch.dtype | None = None) -> bool:
    """Pack an open_clip Transformer's linear layers for the fastest kernel this machine has, where its
    blocks have the plain CLIP shape; leave them as they are where they don't or no kernel runs.
    A causal (text) tower on the small-batch kernel runs all its blocks in one call.

    `weights=torch.bfloat16` packs an fp32 tower's weights as bf16 for the small-batch kernel, which
    sums in fp32 (half the bytes a text query reads); only that kernel does so.
    Returns whether the layers were packed."""
    blocks = list(transformer.resblocks)
    kernel = _plain_blocks(transformer) and _kernel_for(transformer, blocks[0].attn.in_proj_weight.dtype, weights)
    if not kernel:
        return False
    # Swapping the class keeps every parameter as it is; only the weights change layout.
    attention = _attention_for(blocks[0].attn)
    for block in blocks:
        block.attn.__class__ = PackedSelfAttention
        block.attn.kernel = kernel
        block.attn.attention = attention
        _pack(kernel, block.attn, "in_proj_weight")
        mlp = block.mlp
        for layer in (block.attn.out_proj, mlp.c_fc, mlp.c_proj):
            layer.__class__ = PackedLinear
            layer.kernel = kernel
            _pack(kernel, layer, "weight")
        if type(mlp.gelu) is torch.nn.GELU:
            mlp.c_fc.gelu = mlp.gelu.approximate
            mlp.gelu = torch.nn.Identity()
        elif type(mlp.gelu) is open_clip.transformer.QuickGELU and isinstance(kernel, SmallBatch):
            mlp.c_fc.gelu = "quick"
            mlp.gelu = torch.nn.Identity()
    if causal and isinstance(kernel, SmallBatch) and _one_call_fits(blocks):
        transformer.kernel = kernel.kernel
        transformer.heads, transformer.eps = blocks[0].attn.num_heads, blocks[0].ln_1.eps
        transformer.quick_gelu = blocks[0].mlp.c_fc.gelu == "quick"
        transformer.tower_tensors = [
            tensor.detach()
            for block in blocks
            for tensor in (
                block.ln_1.weight,
                block.ln_1.bias,
                block.attn.in_proj_weight,
                block.attn.in_proj_bias,
                block.attn.out_proj.weight,
                block.attn.out_proj.bias,
                block.ln_2.weight,
                block.ln_2.bias,
                block.mlp.c_fc.weight,
                block.mlp.c_fc.bias,
                block.mlp.c_proj.weight,
                block.mlp.c_proj.bias,
            )
        ]
        transformer.__class__ = CausalTextTower
    return True


def _plain_blocks(transformer) -> bool:
    """Whether a Transformer's blocks are CLIP's plain ones, on the CPU."""
    from open_clip.transformer import ResidualAttentionBlock

    blocks = list(transformer.resblocks)
    return (
        bool(blocks)
        and all(parameter.device.type == "cpu" for parameter in transformer.parameters())  # CPU kernels only
        and transformer.batch_first
        and all(
            type(block) is ResidualAttentionBlock
            and type(block.attn) is torch.nn.MultiheadAttention
            and block.attn._qkv_same_embed_dim
            and block.attn.in_proj_bias is not None
            and not hasattr(block, "ln_1_kv")
            and list(block.mlp._modules) == ["c_fc", "gelu", "c_proj"]
            and all(type(layer) is torch.nn.Linear for layer in (block.mlp.c_fc, block.mlp.c_proj))
            for block in blocks
        )
    )


def _one_call_fits(blocks) -> bool:
    """Whether the blocks do exactly what the kernel's causal_tower does."""
    eps = blocks[0].ln_1.eps
    return all(
        isinstance(norm, torch.nn.LayerNorm) and norm.elementwise_affine and norm.bias is not None and norm.eps == eps
        for block in blocks
        for norm in (block.ln_1, block.ln_2)
    ) and all(
        type(block.ls_1) is torch.nn.Identity
        and type(block.ls_2) is torch.nn.Identity
        and type(block.mlp.gelu) is torch.nn.Identity
        and block.mlp.c_fc.gelu in ("none", "quick")
        and block.mlp.c_fc.gelu == blocks[0].mlp.c_fc.gelu
        and block.attn.out_proj.bias is not None
        and block.mlp.c_fc.bias is not None
        and block.mlp.c_proj.bias is not None
        and block.attn.num_heads == blocks[0].attn.num_heads
        for block in blocks
    )


def _kernel_for(transformer, dtype: torch.dtype, weights: torch.dtype | None) -> OneDnn | SmallBatch | None:
    compiled = small_batch.load() if dtype == torch.float32 else None
    if compiled and (kernel := SmallBatch(compiled, weights or dtype)).fits(transformer):
        return kernel
    return OneDnn() if weights in (None, dtype) and OneDnn.runs(dtype) else None


def _attention_for(attention: torch.nn.MultiheadAttention):
    compiled = small_batch.load()
    fits = attention.head_dim % 16 == 0 and attention.in_proj_weight.dtype == torch.bfloat16
    return compiled.attention if compiled and fits else None


def _pack(kernel, module: torch.nn.Module, name: str) -> None:
    """Replace a weight by its packed copy, in place: the plain one is not kept (150 MB)."""
    packed = kernel.pack(getattr(module, name).detach())
    delattr(module, name)
    module.register_buffer(name, packed, persistent=False)
