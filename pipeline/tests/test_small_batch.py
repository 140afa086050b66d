import pytest
import torch
from open_clip.transformer import QuickGELU

from pipeline import small_batch
from pipeline.packed_layers import CausalTextTower, OneDnn, SmallBatch, route_transformer

needs_avx512 = pytest.mark.skipif(not torch.cpu._is_avx512_supported(), reason="the kernel needs AVX-512")


@needs_avx512
def test_the_kernel_builds_and_loads_on_a_cpu_with_avx512():
    # `make setup` builds it; were the build broken, text queries would silently fall back to oneDNN.
    assert small_batch.load() is not None


@needs_avx512
@pytest.mark.parametrize("rows", [1, 2, 5, 8, 9, 12, 16, 17, 77])
@pytest.mark.parametrize(("inputs", "outputs"), [(64, 192), (512, 2048), (2048, 512), (40, 32)])
def test_the_kernel_computes_torch_s_linear_layer(rows, inputs, outputs):
    generator = torch.Generator().manual_seed(rows * inputs + outputs)
    x = torch.randn(2, rows, inputs, generator=generator)
    weight = torch.randn(outputs, inputs, generator=generator) / inputs**0.5
    bias = torch.randn(outputs, generator=generator)
    kernel = SmallBatch(small_batch.load())

    y = kernel.linear(x, kernel.pack(weight), bias, None)

    expected = torch.nn.functional.linear(x, weight, bias)
    assert y.shape == expected.shape
    assert torch.allclose(y, expected, atol=1e-5, rtol=1e-5)
    for approximate in ("none", "tanh"):
        gelu = kernel.linear(x, kernel.pack(weight), bias, approximate)
        assert torch.allclose(gelu, torch.nn.functional.gelu(expected, approximate=approximate), atol=1e-5, rtol=1e-5)


@needs_avx512
@pytest.mark.parametrize(
    ("activation", "expected"),
    [("none", torch.nn.functional.gelu), ("quick", QuickGELU())],
    ids=["torch's erf GELU", "open_clip's QuickGELU"],
)
def test_the_kernel_s_activations_are_torch_s_over_their_whole_range(activation, expected):
    # An identity layer, so the activation sees exactly these values: both tails, zero, the steep middle.
    x = torch.cat([torch.linspace(-60, 60, 6001), torch.tensor([0.0, -0.0, 1e-30, -1e-30, 88.0, -88.0])])
    x = torch.nn.functional.pad(x, (0, -len(x) % 32)).reshape(-1, 32)
    kernel = SmallBatch(small_batch.load())

    y = kernel.linear(x, kernel.pack(torch.eye(32)), torch.zeros(32), activation)

    assert torch.allclose(y, expected(x), atol=1e-6, rtol=1e-6)
    assert torch.isfinite(y).all()


@needs_avx512
@pytest.mark.parametrize("rows", [1, 3, 8, 9])
def test_bf16_weights_are_summed_in_fp32(rows):
    generator = torch.Generator().manual_seed(rows)
    x = torch.randn(rows, 512, generator=generator)
    weight = torch.randn(2048, 512, generator=generator) / 512**0.5
    bias = torch.randn(2048, generator=generator)
    kernel = SmallBatch(small_batch.load(), torch.bfloat16)

    packed = kernel.pack(weight)
    y = kernel.linear(x, packed, bias, None)

    assert packed.dtype == torch.bfloat16
    # Exactly the fp32 layer with each weight rounded to bf16: only the weights lose bits.
    expected = torch.nn.functional.linear(x, weight.to(torch.bfloat16).float(), bias)
    assert torch.allclose(y, expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(y, torch.nn.functional.linear(x, weight, bias), atol=1e-5, rtol=1e-5)


@needs_avx512
def test_the_kernel_refuses_what_it_cannot_compute():
    compiled = small_batch.load()
    with pytest.raises(RuntimeError, match="multiple of 32"):
        compiled.pack(torch.ones(48, 8))
    with pytest.raises(RuntimeError, match="shapes"):
        compiled.linear(torch.ones(1, 9), compiled.pack(torch.ones(32, 8)), torch.ones(32))
    with pytest.raises(RuntimeError, match="vocabulary"):
        embedding, norm = torch.zeros(10, 32), torch.ones(32)
        projection = torch.zeros(32, 16)
        compiled.encode_text(
            torch.tensor([[3, 10]]),
            embedding,
            torch.zeros(4, 32),
            [],
            1,
            1e-5,
            False,
            norm,
            norm,
            1e-5,
            projection,
            -1,
            norm,
        )
    with pytest.raises(RuntimeError, match="float32"):
        compiled.linear(torch.ones(1, 8, dtype=torch.float64), compiled.pack(torch.ones(32, 8)), torch.ones(32))
    with pytest.raises(RuntimeError, match="CPU"):  # a GPU tensor's memory is not the CPU's to read
        compiled.linear(torch.ones(1, 8, device="meta"), compiled.pack(torch.ones(32, 8)), torch.ones(32))


def test_towers_off_the_cpu_keep_torch_s_layers():
    from pipeline.encoder import Encoder, ModelSpec

    model = Encoder(ModelSpec("meepo-tiny", None), optimised=False).model
    model.transformer.to("meta")  # stands for a GPU: any device but the CPU

    assert not route_transformer(model.transformer, causal=True)
    assert type(model.transformer) is not CausalTextTower


@needs_avx512
def test_the_fp32_text_tower_runs_the_small_batch_kernel_and_other_widths_onednn():
    from pipeline.encoder import Encoder, ModelSpec

    model = Encoder(ModelSpec("meepo-tiny", None), optimised=False).model
    route_transformer(model.transformer)
    assert type(model.transformer.resblocks[0].attn.kernel) is SmallBatch
    assert type(model.transformer) is not CausalTextTower  # only where the caller says it is causal

    odd = Encoder(ModelSpec("meepo-tiny", None), optimised=False).model
    for block in odd.transformer.resblocks:  # 264 output features: not a multiple of 32
        block.mlp.c_fc = torch.nn.Linear(64, 264)
        block.mlp.c_proj = torch.nn.Linear(264, 64)
    route_transformer(odd.transformer)
    assert type(odd.transformer.resblocks[0].mlp.c_fc.kernel) is OneDnn


@needs_avx512
def test_the_causal_text_tower_in_one_call_computes_open_clip_s_blocks():
    from pipeline.encoder import Encoder, ModelSpec

    naive = Encoder(ModelSpec("meepo-tiny", None), optimised=False).model.transformer
    tower = Encoder(ModelSpec("meepo-tiny", None), optimised=False).model.transformer
    route_transformer(tower, causal=True)
    x = torch.randn(3, 11, 64, generator=torch.Generator().manual_seed(1))
    mask = torch.full((11, 11), float("-inf")).triu(1)

    with torch.inference_mode():
        expected, got = naive(x, attn_mask=mask), tower(x, attn_mask=mask)

    assert type(tower) is CausalTextTower
    assert torch.allclose(got, expected, atol=1e-5, rtol=1e-5)
    assert torch.equal(x, torch.randn(3, 11, 64, generator=torch.Generator().manual_seed(1)))  # input untouched


@needs_avx512
def test_blocks_the_one_call_does_not_compute_run_one_by_one():
    from open_clip.transformer import LayerScale

    from pipeline.encoder import Encoder, ModelSpec

    tower = Encoder(ModelSpec("meepo-tiny", None), optimised=False).model.transformer
    tower.resblocks[1].ls_2 = LayerScale(64, 0.1)
    route_transformer(tower, causal=True)

    assert type(tower) is not CausalTextTower and type(tower.resblocks[1].mlp.c_fc.kernel) is SmallBatch


@needs_avx512
def test_packed_weights_give_their_memory_back():
    compiled = small_batch.load()
    weight = torch.randn(2048, 512)  # 4 MB
    compiled.pack(weight)
    before = _resident_mb()

    for _ in range(100):
        compiled.pack(weight)

    assert _resident_mb() - before < 40  # 400 MB had they leaked


def _resident_mb() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024


@needs_avx512
def test_the_kernel_lets_the_worker_s_other_threads_run():
    import threading
    import time

    compiled = small_batch.load()
    weight = compiled.pack(torch.randn(8192, 2048))
    x, bias = torch.randn(128, 2048), torch.zeros(8192)  # one call of about 70 ms
    call = {}

    def search():
        call["started"] = time.perf_counter()
        compiled.linear(x, weight, bias)
        call["ended"] = time.perf_counter()

    thread = threading.Thread(target=search)
    turns = []
    thread.start()
    while thread.is_alive():
        turns.append(time.perf_counter())
    thread.join()

    # Holding the GIL, the kernel would let this thread run only around the call: before it (up to
    # one 5 ms switch interval after "started") or after it. So look at the middle half only.
    quarter = (call["ended"] - call["started"]) / 4
    assert any(call["started"] + quarter < turn < call["ended"] - quarter for turn in turns)


@needs_avx512
def test_text_queries_go_from_token_ids_to_the_pooled_vector_in_one_call():
    from pipeline.encoder import Encoder, ModelSpec

    encoder = Encoder(ModelSpec("meepo-tiny", None))
    naive = Encoder(ModelSpec("meepo-tiny", None), optimised=False)
    texts = ["fork", "a fluffy pink cat on a tv"]  # two lengths: each text pools at its own end

    assert CausalTextTower.encodes(encoder.model) and not CausalTextTower.encodes(naive.model)
    assert abs(encoder.encode_texts(texts) - naive.encode_texts(texts)).max() < 1e-5


@needs_avx512
def test_queries_skip_the_start_token_with_the_same_result_bit_for_bit():
    from pipeline.encoder import Encoder, ModelSpec

    encoder = Encoder(ModelSpec("meepo-tiny", None))
    tower = encoder.model.transformer
    texts = ["fork", "a fluffy pink cat on a tv", ""]
    assert tower.start_token == encoder.tokenizer.sot_token_id

    skipping = encoder.encode_texts(texts)
    remembered = tower.start
    tower.start = torch.zeros_like(remembered)
    assert not (encoder.encode_texts(texts) == skipping).all()  # the remembered keys and values are used
    tower.start, tower.start_token = remembered, -1
    assert (encoder.encode_texts(texts) == skipping).all()  # every position computed: the same bits


@needs_avx512
def test_the_opt_in_bf16_text_tower_reads_bf16_weights_and_keeps_the_one_call(settings):
    from pipeline.encoder import Encoder, ModelSpec

    settings.MEEPO_CPU_TEXT_PRECISION = "bf16"
    texts = ["fork", "a fluffy pink cat on a tv"]

    encoder = Encoder(ModelSpec("meepo-tiny", None))
    naive = Encoder(ModelSpec("meepo-tiny", None), optimised=False)

    block = encoder.model.transformer.resblocks[0]
    assert CausalTextTower.encodes(encoder.model) and block.mlp.c_fc.weight.dtype == torch.bfloat16
    assert block.ln_1.weight.dtype == torch.float32  # everything but the linear weights stays fp32
    cosines = (encoder.encode_texts(texts) * naive.encode_texts(texts)).sum(axis=1)
    assert cosines.min() >= 0.999


@needs_avx512
def test_a_text_tower_with_quick_gelu_runs_in_one_call_with_open_clip_s_result():
    import open_clip

    from pipeline.encoder import Encoder, ModelSpec

    encoder = Encoder(ModelSpec("meepo-tiny", None))  # registers the tiny model's config

    def model_with_quick_gelu():
        torch.manual_seed(5)
        return open_clip.create_model("meepo-tiny", force_quick_gelu=True).eval()

    naive, model = model_with_quick_gelu(), model_with_quick_gelu()
    route_transformer(model.transformer, causal=True)
    tokens = encoder.tokenizer(["fork", "a fluffy pink cat on a tv"])
    with torch.inference_mode():
        expected = torch.nn.functional.normalize(naive.encode_text(tokens), dim=-1)
        plain_gelu = torch.nn.functional.normalize(encoder.model.encode_text(tokens), dim=-1)

    assert CausalTextTower.encodes(model) and model.transformer.quick_gelu
    assert abs(model.transformer.encode(model, tokens) - expected).max() < 1e-5
    model.transformer.remember_start(model, encoder.tokenizer.sot_token_id)
    assert abs(model.transformer.encode(model, tokens) - expected).max() < 1e-5
    assert abs(plain_gelu - expected).max() > 1e-3  # the activation matters: this test would see it
