import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from meepo.testing import DEMO_DIR
from pipeline.encoder import Encoder, ModelSpec, ModelUnavailable, get_encoder

ROOT = Path(__file__).resolve().parents[2]


def test_the_tiny_model_is_the_same_in_every_process():
    fresh = Encoder(ModelSpec("meepo-tiny", None))
    shared = get_encoder()
    photo = Image.open(DEMO_DIR / "images" / "espresso-cup.jpg").convert("RGB")

    assert np.array_equal(fresh.encode_texts(["a red mug"]), shared.encode_texts(["a red mug"]))
    assert np.allclose(fresh.encode_images([photo]), shared.encode_images([photo]), atol=1e-6)


def test_it_encodes_text_and_images_to_unit_vectors_of_one_size():
    encoder = get_encoder()
    photo = Image.open(DEMO_DIR / "images" / "chelsea-cat.jpg").convert("RGB")

    texts = encoder.encode_texts(["fork", "a fluffy pink cat on a tv"])
    images = encoder.encode_images([photo])

    assert texts.shape == (2, 64) and images.shape == (1, 64) and encoder.dimension == 64
    assert np.allclose(np.linalg.norm(texts, axis=1), 1.0, atol=1e-5)
    assert np.allclose(np.linalg.norm(images, axis=1), 1.0, atol=1e-5)
    assert not encoder.spec.trained


def test_a_missing_checkpoint_file_names_the_setting():
    with pytest.raises(ModelUnavailable, match=r"MEEPO_CLIP_PRETRAINED=/no/such/weights\.pt is not a file"):
        Encoder(ModelSpec("ViT-B-32", "/no/such/weights.pt"))


def test_a_model_that_failed_to_load_is_not_loaded_again_for_every_search(settings, tmp_path, monkeypatch):
    from pipeline import encoder

    monkeypatch.setattr(encoder, "_failures", {})
    checkpoint = tmp_path / "weights.pt"
    settings.MEEPO_CLIP_MODEL, settings.MEEPO_CLIP_PRETRAINED = "ViT-B-32", str(checkpoint)
    with pytest.raises(ModelUnavailable, match="is not a file"):
        get_encoder()
    checkpoint.write_bytes(b"not a checkpoint")

    with pytest.raises(ModelUnavailable, match="is not a file"):
        get_encoder()  # the same answer at once
    monkeypatch.setattr(encoder, "RETRY_LOAD_AFTER_S", 0.0)
    with pytest.raises(ModelUnavailable, match=r"Could not load the .* weights for ViT-B-32"):
        get_encoder()


def test_too_little_memory_for_the_model_says_so_not_how_to_get_weights(tmp_path):
    # A process whose address space ends 150 MB past what torch and open_clip took: ViT-B-32 needs 350 MB.
    code = """
import resource, django
django.setup()
import open_clip, torch
from pipeline.encoder import Encoder, ModelSpec, ModelUnavailable
torch.zeros(4).sum()
size = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (size + 150 * 2**20, resource.RLIM_INFINITY))
try:
    Encoder(ModelSpec("ViT-B-32", None))
except ModelUnavailable as error:
    print(error)
"""
    # One thread: on a many-core machine, OpenMP's thread stacks alone could use up the limit.
    env = dict(
        os.environ,
        DJANGO_SETTINGS_MODULE="meepo.settings",
        MEEPO_DATA_DIR=str(tmp_path),
        OMP_NUM_THREADS="1",
        MEEPO_TORCH_THREADS="1",
    )

    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=90)

    assert result.stdout.startswith("This machine has too little free memory for ViT-B-32"), result.stderr[-2000:]
    assert "MEEPO_CLIP_PRETRAINED" not in result.stdout


def test_an_unknown_weights_tag_lists_the_known_ones():
    with pytest.raises(ModelUnavailable, match="not a weights tag of ViT-B-32 \\(known tags: openai"):
        Encoder(ModelSpec("ViT-B-32", "no-such-tag"))


def test_an_unknown_model_is_refused():
    with pytest.raises(ModelUnavailable, match="MEEPO_CLIP_MODEL=ViT-Nope is not a model open_clip knows"):
        Encoder(ModelSpec("ViT-Nope", None))


def test_offline_the_default_model_fails_fast_with_one_clear_message(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "MEEPO_CLIP_PRETRAINED")}
    # An endpoint that can never resolve stands in for a machine without internet access.
    env.update(
        MEEPO_DATA_DIR=str(tmp_path / "var"),
        MEEPO_CLIP_MODEL="ViT-B-32",
        HF_ENDPOINT="https://weights.invalid",
        HF_HOME=str(tmp_path / "hf"),
    )
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    subprocess.run(
        [sys.executable, "manage.py", "import_catalog", str(DEMO_DIR / "catalogue.csv")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        check=True,
    )

    result = subprocess.run(
        [sys.executable, "manage.py", "embed_catalog"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "weights.invalid cannot be reached" in result.stderr
    assert "MEEPO_CLIP_PRETRAINED" in result.stderr and "MEEPO_CLIP_MODEL=meepo-tiny" in result.stderr


def test_text_encoding_stops_at_the_end_token_without_changing_the_result():
    import torch

    encoder = get_encoder()
    texts = ["fork", "a fluffy pink cat on a tv", "", "x " * 100]
    tokens = encoder.tokenizer(texts)

    with torch.inference_mode():
        reference = torch.nn.functional.normalize(encoder.model.encode_text(tokens), dim=-1).numpy()

    assert np.abs(encoder.encode_texts(texts) - reference).max() < 1e-5


def test_no_texts_give_no_vectors():
    encoder = get_encoder()

    assert encoder.encode_texts([]).shape == (0, encoder.dimension)


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_each_cpu_image_precision_stays_close_to_fp32(settings, precision):
    settings.MEEPO_CPU_IMAGE_PRECISION = precision
    photos = [Image.open(path).convert("RGB") for path in sorted((DEMO_DIR / "images").glob("*.jpg"))[:8]]
    reference = Encoder(ModelSpec("meepo-tiny", None), optimised=False)

    encoder = Encoder(ModelSpec("meepo-tiny", None))

    assert encoder.image_precision == precision and reference.image_precision == "fp32"
    cosines = (encoder.encode_images(photos) * reference.encode_images(photos)).sum(axis=1)
    assert cosines.min() >= 0.99
    # The image precision leaves the text tower alone (which may still run other, exact kernels).
    settings.MEEPO_CPU_IMAGE_PRECISION = "fp32"
    fp32_images = Encoder(ModelSpec("meepo-tiny", None))
    assert np.array_equal(encoder.encode_texts(["a red mug"]), fp32_images.encode_texts(["a red mug"]))
    assert np.abs(encoder.encode_texts(["a red mug"]) - reference.encode_texts(["a red mug"])).max() < 1e-5


def test_the_bf16_image_tower_runs_through_onednn(settings):
    from pipeline.packed_layers import OneDnn, PackedSelfAttention

    settings.MEEPO_CPU_IMAGE_PRECISION = "bf16"

    block = Encoder(ModelSpec("meepo-tiny", None)).model.visual.transformer.resblocks[0]

    assert type(block.attn) is PackedSelfAttention and type(block.attn.kernel) is OneDnn
    assert block.mlp.c_fc.weight.is_mkldnn


def test_the_opt_in_bf16_text_tower_stays_close_to_the_exact_one(settings):
    settings.MEEPO_CPU_TEXT_PRECISION = "bf16"
    texts = ["fork", "a fluffy pink cat on a tv", "", "x " * 100]

    encoder = Encoder(ModelSpec("meepo-tiny", None))
    exact = Encoder(ModelSpec("meepo-tiny", None), text_precision="fp32")

    assert encoder.text_precision == "bf16" and exact.text_precision == "fp32"
    assert (encoder.encode_texts(texts) * exact.encode_texts(texts)).sum(axis=1).min() >= 0.999


def test_without_meepo_s_kernel_the_opt_in_bf16_text_tower_turns_bf16_for_onednn(settings, monkeypatch):
    import torch

    from pipeline import small_batch
    from pipeline.packed_layers import OneDnn

    monkeypatch.setattr(small_batch, "load", lambda: None)  # as on a CPU without AVX-512
    settings.MEEPO_CPU_TEXT_PRECISION = "bf16"

    encoder = Encoder(ModelSpec("meepo-tiny", None))

    block = encoder.model.transformer.resblocks[0]
    assert block.ln_1.weight.dtype == torch.bfloat16
    if OneDnn.runs(torch.bfloat16):
        assert type(block.attn.kernel) is OneDnn
    exact = Encoder(ModelSpec("meepo-tiny", None), text_precision="fp32")
    texts = ["fork", "a fluffy pink cat on a tv"]
    assert (encoder.encode_texts(texts) * exact.encode_texts(texts)).sum(axis=1).min() >= 0.99


def test_an_unknown_text_precision_is_refused():
    with pytest.raises(ValueError, match="fp32 or bf16, not 'fp16'"):
        Encoder(ModelSpec("meepo-tiny", None), text_precision="fp16")


def test_text_queries_run_the_text_tower_through_packed_layers_with_the_naive_result():
    import torch

    from pipeline.packed_layers import PackedLinear, PackedSelfAttention

    texts = ["fork", "a fluffy pink cat on a tv", "", "x " * 100]
    naive = Encoder(ModelSpec("meepo-tiny", None), optimised=False)

    encoder = Encoder(ModelSpec("meepo-tiny", None))

    block = encoder.model.transformer.resblocks[0]
    assert type(block.attn) is PackedSelfAttention and type(block.mlp.c_fc) is PackedLinear
    assert block.mlp.c_fc.gelu == "none" and type(block.mlp.gelu) is torch.nn.Identity
    # Packed in place, not copied: the plain weights are gone.
    assert "in_proj_weight" not in dict(block.attn.named_parameters())
    assert "weight" not in dict(block.mlp.c_fc.named_parameters())
    assert type(naive.model.transformer.resblocks[0].attn) is torch.nn.MultiheadAttention
    with torch.inference_mode():
        reference = torch.nn.functional.normalize(naive.model.encode_text(naive.tokenizer(texts)), dim=-1).numpy()
    assert np.abs(encoder.encode_texts(texts) - reference).max() < 1e-5


def test_text_towers_of_another_shape_keep_torch_s_own_layers():
    import torch

    from pipeline.packed_layers import route_transformer

    model = Encoder(ModelSpec("meepo-tiny", None), optimised=False).model
    block = model.transformer.resblocks[0]
    block.mlp = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.GELU(), torch.nn.Linear(256, 64))

    route_transformer(model.transformer)

    assert type(model.transformer.resblocks[1].attn) is torch.nn.MultiheadAttention
    assert type(model.transformer.resblocks[1].mlp.c_fc) is torch.nn.Linear


def test_weights_trained_with_quick_gelu_get_it_though_the_model_s_config_says_gelu(tmp_path):
    import open_clip

    from pipeline.encoder import _trained_with_quick_gelu

    assert _trained_with_quick_gelu(open_clip, ModelSpec("ViT-B-32", "openai"))
    assert not _trained_with_quick_gelu(open_clip, ModelSpec("ViT-B-32", "laion2b_s34b_b79k"))
    assert not _trained_with_quick_gelu(open_clip, ModelSpec("ViT-B-32", None))
    assert not _trained_with_quick_gelu(open_clip, ModelSpec("ViT-B-32", str(tmp_path / "weights.bin")))


@pytest.fixture(scope="module")
def small_model():
    """ViT-S-32's seeded random weights, and the vectors of an encoder built with them."""
    import open_clip
    import torch

    from pipeline.encoder import TINY_MODEL_SEED

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_MODEL_SEED)
        weights = open_clip.create_model("ViT-S-32").state_dict()
    encoder = Encoder(ModelSpec("ViT-S-32", None))  # the same seed: the same weights
    photo = Image.open(DEMO_DIR / "images" / "espresso-cup.jpg").convert("RGB")
    return weights, photo, encoder.encode_texts(["a red mug"]), encoder.encode_images([photo])


@pytest.mark.parametrize("kind", ["zip", "torch-before-1.6", "safetensors"])
def test_weights_from_a_file_give_the_vectors_of_the_model_they_were_saved_from(tmp_path, small_model, kind):
    # Meepo maps zip checkpoints instead of reading them; the old format cannot be mapped and is read.
    import torch
    from safetensors.torch import save_file

    weights, photo, text_vectors, photo_vectors = small_model
    checkpoint = tmp_path / ("weights.safetensors" if kind == "safetensors" else "weights.bin")
    if kind == "safetensors":
        save_file({name: tensor.contiguous() for name, tensor in weights.items()}, checkpoint)
    else:
        torch.save(weights, checkpoint, _use_new_zipfile_serialization=kind == "zip")

    loaded = Encoder(ModelSpec("ViT-S-32", str(checkpoint)))

    assert loaded.spec.trained
    assert np.array_equal(loaded.encode_texts(["a red mug"]), text_vectors)
    assert np.array_equal(loaded.encode_images([photo]), photo_vectors)
