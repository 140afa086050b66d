"""The OpenCLIP encoder: loaded lazily, once per process, behind a lock.

torch and open_clip are imported inside functions so that `migrate`, the admin and the plain
tests never pay for them.
"""

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from django.conf import settings

from pipeline.pixels import Recipe

TINY_MODEL = "meepo-tiny"
TINY_MODEL_SEED = 20261122
MODEL_CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"

logger = logging.getLogger(__name__)


OFFLINE_HINT = (
    "Download the checkpoint on a machine with internet access and set MEEPO_CLIP_PRETRAINED to its path "
    f"(e.g. /srv/meepo/weights/open_clip_pytorch_model.bin), or set MEEPO_CLIP_MODEL={TINY_MODEL} for an "
    "untrained offline demo."
)


class ModelUnavailable(RuntimeError):
    """The configured model cannot be loaded; the message says which setting to change."""


@dataclass(frozen=True)
class ModelSpec:
    name: str
    pretrained: str | None

    @property
    def key(self) -> str:
        """What an embedding is stamped with: vectors from different keys are never mixed."""
        return f"{self.name}:{self.pretrained or 'untrained'}"

    @property
    def trained(self) -> bool:
        return self.pretrained is not None


def configured_model() -> ModelSpec:
    pretrained = settings.MEEPO_CLIP_PRETRAINED.strip()
    return ModelSpec(
        name=settings.MEEPO_CLIP_MODEL.strip(),
        pretrained=None if pretrained.lower() in ("", "none") else pretrained,
    )


def _looks_like_path(value: str) -> bool:
    return "/" in value or value.endswith((".pt", ".pth", ".bin", ".safetensors"))


def weights_problem(spec: ModelSpec) -> str | None:
    """A cheap check (no torch) for settings that cannot work, used by `manage.py check`."""
    if spec.name == TINY_MODEL and spec.pretrained:
        return f"{TINY_MODEL} has no trained weights; unset MEEPO_CLIP_PRETRAINED."
    if spec.pretrained and _looks_like_path(spec.pretrained) and not Path(spec.pretrained).is_file():
        return f"MEEPO_CLIP_PRETRAINED={spec.pretrained} is not a file."
    return None


class Encoder:
    def __init__(self, spec: ModelSpec, *, optimised: bool = True, text_precision: str | None = None):
        import open_clip
        import torch

        self.spec = spec
        self.device = _pick_device(torch)
        if settings.MEEPO_TORCH_THREADS:
            torch.set_num_threads(settings.MEEPO_TORCH_THREADS)
        if spec.name == TINY_MODEL:
            open_clip.add_model_config(MODEL_CONFIG_DIR / f"{TINY_MODEL}.json")
        problem = weights_problem(spec)
        if problem:
            raise ModelUnavailable(problem)
        if spec.name not in open_clip.list_models():
            raise ModelUnavailable(
                f"MEEPO_CLIP_MODEL={spec.name} is not a model open_clip knows (try ViT-B-32, or {TINY_MODEL} offline)."
            )
        problem = _download_problem(open_clip, spec)
        if problem:
            raise ModelUnavailable(problem)
        try:
            model, preprocess = _create(open_clip, torch, spec, self.device)
        except Exception as error:
            raise ModelUnavailable(_load_failure(spec, error, self.device)) from None
        model.eval()
        self.image_precision = _image_precision(torch, self.device) if optimised else "fp32"
        if self.image_precision == "bf16":
            from pipeline.packed_layers import route_transformer

            model.visual.to(torch.bfloat16)
            if isinstance(getattr(model.visual, "transformer", None), open_clip.transformer.Transformer):
                route_transformer(model.visual.transformer)
        elif self.image_precision == "int8":
            from pipeline.packed_layers import quantise_to_int8

            quantise_to_int8(model.visual)
        if optimised:
            from pipeline.class_token import pool_class_token_only

            pool_class_token_only(model.visual)
        self.text_precision = "fp32"
        if optimised and self.device == "cpu" and _can_truncate(model):
            from pipeline.packed_layers import route_transformer

            # bf16 text weights are opt-in: faster, but no longer exact (cosine 0.9999), and issue #4
            # asks for the same result. Meepo's kernel reads them as bf16 and sums in fp32; without it
            # the whole tower turns bf16 for oneDNN.
            self.text_precision = text_precision or settings.MEEPO_CPU_TEXT_PRECISION
            if self.text_precision not in ("fp32", "bf16"):
                raise ValueError(f"text_precision is fp32 or bf16, not {self.text_precision!r}")
            if self.text_precision == "fp32":
                route_transformer(model.transformer, causal=True)
            elif not route_transformer(model.transformer, causal=True, weights=torch.bfloat16):
                _text_tower_to_bf16(model)
                route_transformer(model.transformer, causal=True)
        from pipeline.packed_layers import CausalTextTower

        self.model = model
        # The kernel's one call from token ids to normalised vectors: each torch operation after the
        # text tower cost 0.1-0.4 ms, its caches cold from the 150 MB of weights streamed through.
        self.text_in_one_call = CausalTextTower.encodes(model)
        self.tokenizer = open_clip.get_tokenizer(spec.name)
        if self.text_in_one_call and isinstance(getattr(self.tokenizer, "sot_token_id", None), int):
            model.transformer.remember_start(model, self.tokenizer.sot_token_id)
        self.preprocess = preprocess
        # The unoptimised encoder (the tests' and the benchmark's reference) keeps the plain preprocess.
        self.recipe = Recipe.of(preprocess) if optimised else None
        self.image_size = _image_size(preprocess)
        projection = getattr(model, "text_projection", None)
        self.dimension = (
            projection.shape[1] if isinstance(projection, torch.Tensor) else self.encode_texts(["a"]).shape[1]
        )

    fits_on_gpu = 0  # the most images encode_pixels sends through at once, once one batch did not fit

    @property
    def on_gpu(self) -> bool:
        return self.device == "cuda"

    @property
    def batch_size(self) -> int:
        """Photos per forward pass in embed_catalog (and the benchmark)."""
        return settings.MEEPO_EMBED_BATCH_SIZE or (256 if self.on_gpu else 32)

    def _autocast(self):
        import contextlib

        import torch

        if self.image_precision == "fp16":
            return torch.autocast("cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    @property
    def draft_size(self) -> tuple[int, int]:
        """JPEGs are decoded at the smallest DCT scale still at least this big: the model looks at
        image_size pixels, so decoding a 2000-px photo in full is wasted work (cosine to a full
        decode stays above 0.99; measured by `manage.py benchmark`)."""
        side = max(self.image_size, 224)  # small test models still get a faithful decode
        return side, side

    def prepare(self, image):
        """A decoded photo (PIL) as the model's input, ready for `stack`."""
        return self.recipe.prepare(image) if self.recipe else self.preprocess(image)

    def pixels_from_bytes(self, data: bytes):
        """Image bytes to the model's input, ready for `stack`, the fast way."""
        from catalog.images import load_rgb

        return self.prepare(load_rgb(data, max_pixels=settings.MEEPO_MAX_IMAGE_PIXELS, draft_size=self.draft_size))

    @property
    def decoders(self) -> int:
        """Threads decoding photos for one batch: every core this process may use (PIL and numpy
        release the GIL)."""
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1

    @property
    def decodes_alongside(self) -> bool:
        """Whether a batch decodes while the previous one is encoded. A GPU would otherwise wait for
        the CPU. On a CPU the forward pass keeps every core busy, and a decoder beside it stalls
        both of torch's threads (one loses its core, the other waits for it), so decoding first with
        every core is faster: 34.8-35.9 against 31.6-33.0 images/s (ViT-B-32, 2 cores)."""
        return self.on_gpu

    def stack(self, pixels: list):
        """One batch of prepared images; on a GPU in pinned memory, so that its copy to the device
        does not wait on the pageable-memory staging."""
        import torch

        batch = self.recipe.stack(pixels) if self.recipe else torch.stack(pixels)
        return batch.pin_memory() if self.on_gpu else batch

    def encode_pixels(self, batch):
        """Encode a batch from `stack` (or of preprocessed float images) to normalised float32 vectors.

        A batch the GPU has no room for (a big model on a small GPU) is encoded in parts, and later
        batches in parts of the size that fitted."""
        import numpy as np
        import torch

        step = self.fits_on_gpu or len(batch)
        if len(batch) > step:
            return np.concatenate(
                [self.encode_pixels(batch[start : start + step]) for start in range(0, len(batch), step)]
            )
        try:
            return self._encode_pixels(batch)
        except torch.cuda.OutOfMemoryError:  # the name a GPU machine's older torch knows too
            if not self.on_gpu or len(batch) < 2:
                raise
        # Out of the except block: its traceback would keep the failed pass's tensors on the GPU.
        torch.cuda.empty_cache()
        self.fits_on_gpu = len(batch) // 2
        logger.warning(
            "The GPU has no room for %d images at once; encoding at most %d at a time "
            "(set MEEPO_EMBED_BATCH_SIZE to start there).",
            len(batch),
            self.fits_on_gpu,
        )
        return self.encode_pixels(batch)

    def _encode_pixels(self, batch):
        import torch

        with torch.inference_mode(), self._autocast():
            batch = batch.to(self.device, non_blocking=True)
            if batch.dtype == torch.uint8:
                batch = self.recipe.normalise(batch)
            if self.image_precision == "bf16":
                batch = batch.to(torch.bfloat16)
            features = self.model.encode_image(batch)
        return _normalised(features)

    def encode_images(self, images: list) -> "np.ndarray":  # noqa: F821
        return self.encode_pixels(self.stack([self.prepare(image) for image in images]))

    def encode_texts(self, texts: list[str]) -> "np.ndarray":  # noqa: F821
        import torch

        if not texts:
            import numpy as np

            return np.zeros((0, self.dimension), dtype=np.float32)
        tokens = self.tokenizer(texts)
        if self.text_in_one_call:
            return self.model.transformer.encode(self.model, tokens).numpy()
        tokens = tokens.to(self.device)
        # fp32 on a GPU too: a text query costs the GPU next to nothing, and issue #4 asks for exact text.
        with torch.inference_mode():
            if _can_truncate(self.model):
                features = _encode_text_up_to_end(self.model, tokens)
            else:
                features = self.model.encode_text(tokens)
        return _normalised(features)


def _create(open_clip, torch, spec: ModelSpec, device: str):
    """open_clip's model and preprocess, with torch mapping the weights file instead of reading it into
    memory first. Loading ViT-B-32 from a .bin had taken 6.6 s instead of 2.9, 570 MB more anonymous
    memory at its peak (and two workers start at once) and 120 MB more after (2-core EPYC).
    safetensors files are mapped already."""
    import torch.utils.serialization

    def create():
        # A fixed seed makes untrained weights (the tiny model) identical in every process.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(TINY_MODEL_SEED)
            model, _, preprocess = open_clip.create_model_and_transforms(
                spec.name,
                pretrained=spec.pretrained,
                device=device,
                force_quick_gelu=_trained_with_quick_gelu(open_clip, spec),
            )
        return model, preprocess

    try:
        with torch.utils.serialization.config.patch({"load.mmap": True}):
            return create()
    except RuntimeError as error:
        if "mmap can only be used" not in str(error):
            raise
    return create()  # a checkpoint saved in torch's format from before 1.6 cannot be mapped


def _load_failure(spec: ModelSpec, error: Exception, device: str) -> str:
    """Why the model did not load: the offline hint is no help when memory ran out."""
    import torch

    what = f"{error.__class__.__name__}: {str(error)[:200]}"
    if isinstance(error, torch.cuda.OutOfMemoryError) and device == "cuda":
        return f"The GPU has too little free memory for {spec.name} ({what}). Free some, or set MEEPO_DEVICE=cpu."
    if isinstance(error, (MemoryError, torch.cuda.OutOfMemoryError)) or "can't allocate memory" in str(error):
        return f"This machine has too little free memory for {spec.name} ({what})."
    return f"Could not load the {spec.pretrained!r} weights for {spec.name} ({what}). {OFFLINE_HINT}"


def _trained_with_quick_gelu(open_clip, spec: ModelSpec) -> bool:
    """Whether the weights were trained with QuickGELU where the model's config says GELU (OpenAI's
    weights for ViT-B-32, among others): open_clip only warns, and the vectors come out a little off."""
    if not spec.pretrained or _looks_like_path(spec.pretrained):
        return False  # a weights file says nothing: MEEPO_CLIP_MODEL=ViT-B-32-quickgelu for OpenAI's
    return bool(open_clip.get_pretrained_cfg(spec.name, spec.pretrained).get("quick_gelu", False))


def _download_problem(open_clip, spec: ModelSpec) -> str | None:
    """Say at once when weights would have to be downloaded but cannot be: open_clip would otherwise
    retry for a minute before failing."""
    if not spec.pretrained or _looks_like_path(spec.pretrained):
        return None
    cfg = open_clip.get_pretrained_cfg(spec.name, spec.pretrained)
    if not cfg:
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(spec.name)) or "none"
        return f"MEEPO_CLIP_PRETRAINED={spec.pretrained} is not a weights tag of {spec.name} (known tags: {tags})."
    if cfg.get("hf_hub"):
        from huggingface_hub import constants, try_to_load_from_cache

        parts = cfg["hf_hub"].split("/")
        model_id = "/".join(parts[:2])
        names = {
            "open_clip_model.safetensors",
            "open_clip_pytorch_model.bin",
            *(parts[2:3] if parts[2:3] != [""] else []),
        }
        if any(isinstance(try_to_load_from_cache(model_id, name), str) for name in names):
            return None
        host = urlsplit(constants.ENDPOINT).hostname
    else:
        url = cfg.get("url", "")
        if (Path.home() / ".cache" / "clip" / Path(urlsplit(url).path).name).is_file():
            return None
        host = urlsplit(url).hostname
    try:
        socket.getaddrinfo(host, 443)
    except OSError:
        return (
            f"The {spec.pretrained!r} weights for {spec.name} are not downloaded yet and {host} cannot be reached "
            f"(no internet access?). {OFFLINE_HINT}"
        )
    return None


def _can_truncate(model) -> bool:
    import open_clip

    return type(model) is open_clip.CLIP and model.text_pool_type == "argmax" and model.attn_mask is not None


def _encode_text_up_to_end(model, tokens):
    """CLIP's encode_text on the tokens up to the last end-of-text token only.

    The text tower is causal (no position sees a later one) and pools at the end-of-text token (the
    highest token id, hence argmax), so the padding after it cannot change the output: dropping it
    is exact and turns 77 positions into the handful a shop query needs (issue #4).
    """
    import torch
    from open_clip.transformer import text_global_pool

    length = int(tokens.argmax(dim=-1).max()) + 1
    tokens = tokens[:, :length]
    cast_dtype = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast_dtype) + model.positional_embedding[:length].to(cast_dtype)
    x = model.transformer(x, attn_mask=model.attn_mask[:length, :length])
    x = model.ln_final(x)
    x = text_global_pool(x, tokens, model.text_pool_type)
    if model.text_projection is None:
        return x
    if isinstance(model.text_projection, torch.nn.Linear):
        return model.text_projection(x)
    return x @ model.text_projection


def _normalised(features):
    import torch

    features = torch.nn.functional.normalize(features.float(), dim=-1)
    return features.cpu().numpy()


def _image_precision(torch, device: str) -> str:
    """How the image tower computes on a CPU (on a GPU it runs under fp16 autocast).

    Most of a ViT's time on a CPU is its linear layers. Where the CPU multiplies bf16 natively (AMX,
    or AVX512-BF16 as on AMD Zen 4), bf16 weights run them 2.5–4× faster than fp32 and stay
    closest to the fp32 vectors (cosine 0.9999); elsewhere bf16 is emulated and slow, and int8
    dynamic quantisation of every linear layer wins (cosine 0.999; packed_layers.quantise_to_int8).
    Both hold the cosine bars of issue #4, measured by `manage.py benchmark`.
    """
    if device != "cpu":
        return "fp16"  # autocast
    wanted = settings.MEEPO_CPU_IMAGE_PRECISION
    if wanted == "auto":
        native_bf16 = torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported()
        return "bf16" if native_bf16 else "int8"
    return wanted


def _text_tower_to_bf16(model) -> None:
    import torch

    for module in (model.transformer, model.token_embedding, model.ln_final):
        module.to(torch.bfloat16)
    for name in ("positional_embedding", "text_projection", "attn_mask"):
        value = getattr(model, name)
        if isinstance(value, torch.nn.Module):
            value.to(torch.bfloat16)
        elif isinstance(value, torch.nn.Parameter):
            value.data = value.data.to(torch.bfloat16)
        elif isinstance(value, torch.Tensor):
            setattr(model, name, value.to(torch.bfloat16))


def _pick_device(torch) -> str:
    wanted = settings.MEEPO_DEVICE
    if wanted == "cuda" and not torch.cuda.is_available():
        raise ModelUnavailable("MEEPO_DEVICE=cuda but no CUDA GPU is available; use MEEPO_DEVICE=auto or cpu.")
    if wanted == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return wanted


def _image_size(preprocess) -> int:
    for transform in getattr(preprocess, "transforms", []):
        size = getattr(transform, "size", None)
        if size:
            return size if isinstance(size, int) else size[0]
    return 224


_lock = threading.Lock()
_encoders: dict[ModelSpec, Encoder] = {}
# A model that failed to load is not tried again for this long: a failing load took 1.1-4.7 s
# (ViT-B-32 and a damaged checkpoint), and every search of every thread waited for it behind the lock.
RETRY_LOAD_AFTER_S = 60.0
_failures: dict[ModelSpec, tuple[float, ModelUnavailable]] = {}


def get_encoder() -> Encoder:
    """The process's encoder for the configured model, loaded on first use."""
    spec = configured_model()
    encoder = _encoders.get(spec)
    if encoder is None:
        with _lock:
            encoder = _encoders.get(spec)
            if encoder is None:
                encoder = _encoders[spec] = _load(spec)
    return encoder


def _load(spec: ModelSpec) -> Encoder:
    failed_at, error = _failures.get(spec, (None, None))
    if failed_at is not None and time.monotonic() - failed_at < RETRY_LOAD_AFTER_S:
        raise ModelUnavailable(str(error))
    try:
        encoder = Encoder(spec)
    except ModelUnavailable as error:
        _failures[spec] = (time.monotonic(), error)
        raise
    _failures.pop(spec, None)
    return encoder


def loaded_encoder() -> Encoder | None:
    """The encoder if this process has already loaded it (status pages must not trigger a load)."""
    return _encoders.get(configured_model())
