"""Encoder benchmarks: Meepo's code paths against the naive way, in one process, on the same data.

The naive baseline is written the way the seed articles do it: open each file with PIL, apply the
open_clip preprocess, run the fp32 model in batches of 64, and encode text on the full 77-token
context.

The two take turns on the same data (round by round, query by query), going first alternately: the
speed of these shared machines drifts by a third within minutes, and turns put the drift on both.
"""

import io
import random
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from pipeline.encoder import Encoder

DEMO_IMAGES = Path(__file__).resolve().parents[2] / "catalog" / "demo" / "images"
NAIVE_BATCH = 64
QUERIES = [
    "fork",
    "a fluffy pink cat on a tv",
    "red coffee cup on a saucer",
    "night sky full of stars",
    "portrait of a woman in uniform",
    "mountain trail in autumn",
    "a rocket on the launch pad",
    "paintbrushes with bright colours",
]


def shop_photos(count: int, *, seed: int = 0) -> list[bytes]:
    """The demo photos, repeated and re-encoded as JPEGs of shop-photo sizes (800–2000 px)."""
    rng = random.Random(seed)
    sources = sorted(DEMO_IMAGES.glob("*.jpg"))
    photos = []
    for number in range(count):
        image = Image.open(sources[number % len(sources)]).convert("RGB")
        side = rng.randint(800, 2000)
        scale = side / max(image.size)
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BICUBIC)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=rng.randint(82, 95))
        photos.append(buffer.getvalue())
    return photos


def naive_embed(encoder: Encoder, photos: list[bytes]) -> np.ndarray:
    import torch

    vectors = []
    for start in range(0, len(photos), NAIVE_BATCH):
        batch = torch.stack(
            [
                encoder.preprocess(Image.open(io.BytesIO(data)).convert("RGB"))
                for data in photos[start : start + NAIVE_BATCH]
            ]
        )
        with torch.inference_mode():
            features = encoder.model.encode_image(batch.to(encoder.device))
        vectors.append(torch.nn.functional.normalize(features.float(), dim=-1).cpu().numpy())
    return np.vstack(vectors)


def meepo_embed(encoder: Encoder, photos: list[bytes], *, batch_size: int) -> np.ndarray:
    """The embed_catalog path: draft-mode decoding on every core, then the forward pass (on a GPU,
    decoding the next batch in the background during it), through the encoder's own methods."""
    from concurrent.futures import ThreadPoolExecutor

    batches = [photos[start : start + batch_size] for start in range(0, len(photos), batch_size)]

    def load(batch):
        return encoder.stack(list(decoders.map(encoder.pixels_from_bytes, batch)))

    vectors = []
    with ThreadPoolExecutor(max_workers=1) as pool, ThreadPoolExecutor(encoder.decoders) as decoders:
        if not encoder.decodes_alongside:
            return np.vstack([encoder.encode_pixels(load(batch)) for batch in batches])
        pending = pool.submit(load, batches[0]) if batches else None
        for number in range(len(batches)):
            pixels = pending.result()
            if number + 1 < len(batches):
                pending = pool.submit(load, batches[number + 1])
            vectors.append(encoder.encode_pixels(pixels))
    return np.vstack(vectors)


def embedding_compare(naive_encoder: Encoder, encoder: Encoder, *, count: int, batch_size: int) -> dict:
    """naive_encoder is the same model unoptimised (fp32 everywhere)."""
    photos = shop_photos(count)
    meepo_embed(encoder, photos[:batch_size], batch_size=batch_size)  # warm-up: kernels, caches
    naive_embed(naive_encoder, photos[:8])
    naive, meepo = [], []
    naive_seconds = meepo_seconds = 0.0
    for number, turn in enumerate(_rounds(photos, size=max(NAIVE_BATCH, batch_size))):
        # Each round of photos goes through both, which take turns going first.
        for which in ("naive", "meepo") if number % 2 == 0 else ("meepo", "naive"):
            started = time.perf_counter()
            if which == "naive":
                naive.append(naive_embed(naive_encoder, turn))
                naive_seconds += time.perf_counter() - started
            else:
                meepo.append(meepo_embed(encoder, turn, batch_size=batch_size))
                meepo_seconds += time.perf_counter() - started
    cosines = (np.vstack(naive) * np.vstack(meepo)).sum(axis=1)
    return {
        "photos": count,
        "naive_images_per_s": round(count / naive_seconds, 2),
        "meepo_images_per_s": round(count / meepo_seconds, 2),
        "speedup": round(naive_seconds / meepo_seconds, 2),
        "cosine_to_naive_min": round(float(cosines.min()), 5),
        "cosine_to_naive_mean": round(float(cosines.mean()), 5),
        "device": encoder.device,
        "forward_images_per_s": forward_rate(encoder, photos, batch_size=batch_size),
    }


def forward_rate(encoder: Encoder, photos: list[bytes], *, batch_size: int) -> float:
    """Images/s of the encoder's forward pass alone, on batches decoded beforehand: on a GPU, the
    GPU's own rate (the pipeline's rate above is then bound by decoding on the CPU)."""
    batches = [
        encoder.stack([encoder.pixels_from_bytes(data) for data in photos[start : start + batch_size]])
        for start in range(0, len(photos), batch_size)
    ]
    started = time.perf_counter()
    for batch in batches:
        encoder.encode_pixels(batch)  # returns vectors on the CPU: the GPU has finished
    return round(len(photos) / (time.perf_counter() - started), 2)


def _rounds(photos: list[bytes], *, size: int) -> list[list[bytes]]:
    return [photos[start : start + size] for start in range(0, len(photos), size)]


def _percentiles(samples_ms: list[float]) -> dict:
    return {
        "p50_ms": round(float(np.percentile(samples_ms, 50)), 2),
        "p95_ms": round(float(np.percentile(samples_ms, 95)), 2),
    }


def _timed_in_turns(first, second, inputs, repeats: int) -> tuple[list[float], list[float]]:
    """Milliseconds of each call of first and of second, which take turns on each input."""
    samples = ([], [])
    for repeat in range(repeats):
        for number, value in enumerate(inputs):
            order = (0, 1) if (repeat + number) % 2 == 0 else (1, 0)
            for which in order:
                started = time.perf_counter()
                (first, second)[which](value)
                samples[which].append((time.perf_counter() - started) * 1000)
    return samples


def text_encoder(naive_encoder: Encoder, encoder: Encoder, *, repeats: int, bf16_encoder: Encoder | None) -> dict:
    """Naive: encode_text on the 77-token context in fp32. Meepo: as configured (exact by default);
    with bf16_encoder, also the opt-in bf16 text tower, which is not exact."""
    import torch

    def naive(query: str) -> np.ndarray:
        with torch.inference_mode():
            features = naive_encoder.model.encode_text(naive_encoder.tokenizer([query]).to(naive_encoder.device))
        return torch.nn.functional.normalize(features.float(), dim=-1).cpu().numpy()[0]

    def meepo(query: str) -> np.ndarray:
        return encoder.encode_texts([query])[0]

    naive(QUERIES[0]), meepo(QUERIES[0])
    naive_ms, meepo_ms = _timed_in_turns(naive, meepo, QUERIES, repeats)
    naive_p50 = np.percentile(naive_ms, 50)
    references = {query: naive(query) for query in QUERIES}
    result = {
        "precision": encoder.text_precision,
        "naive": _percentiles(naive_ms),
        "meepo": _percentiles(meepo_ms),
        "speedup_p50": round(float(naive_p50 / np.percentile(meepo_ms, 50)), 2),
        "max_abs_difference": max(float(np.abs(references[query] - meepo(query)).max()) for query in QUERIES),
    }
    if bf16_encoder is not None:
        naive_ms, bf16_ms = _timed_in_turns(naive, lambda query: bf16_encoder.encode_texts([query]), QUERIES, repeats)
        cosines = [float(references[query] @ bf16_encoder.encode_texts([query])[0]) for query in QUERIES]
        result["bf16_opt_in"] = {
            **_percentiles(bf16_ms),
            "speedup_p50": round(float(np.percentile(naive_ms, 50) / np.percentile(bf16_ms, 50)), 2),
            "cosine_to_naive_min": round(min(cosines), 5),
        }
    return result


def image_query_compare(naive_encoder: Encoder, encoder: Encoder, *, repeats: int) -> dict:
    """From uploaded bytes to a query vector (what a photo search spends before FAISS)."""

    def naive(data: bytes) -> np.ndarray:
        return _naive_vector(naive_encoder, Image.open(io.BytesIO(data)).convert("RGB"))

    def meepo(data: bytes) -> np.ndarray:
        return encoder.encode_pixels(encoder.stack([encoder.pixels_from_bytes(data)]))[0]

    return _query_compare(naive, meepo, shop_photos(8, seed=1), repeats)


def box_query_compare(naive_encoder: Encoder, encoder: Encoder, *, repeats: int) -> dict:
    """A box drawn on a 12-megapixel phone photo, from uploaded bytes to the query vector of what is
    inside it. Naive: decode in full, cut the box out."""
    from search.queries import query_image

    x, y, w, h = box = (1400, 900, 1200, 1200)

    def naive(data: bytes) -> np.ndarray:
        return _naive_vector(naive_encoder, Image.open(io.BytesIO(data)).convert("RGB").crop((x, y, x + w, y + h)))

    def meepo(data: bytes) -> np.ndarray:
        return encoder.encode_images([query_image(data, box=box)])[0]

    return _query_compare(naive, meepo, phone_photos(4), repeats)


def phone_photos(count: int) -> list[bytes]:
    """Demo photos as a phone takes them: 4032 × 3024 JPEGs."""
    photos = []
    for source in sorted(DEMO_IMAGES.glob("*.jpg"))[:count]:
        image = ImageOps.fit(Image.open(source).convert("RGB"), (4032, 3024), Image.Resampling.BICUBIC)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=90)
        photos.append(buffer.getvalue())
    return photos


def _naive_vector(naive_encoder: Encoder, image: Image.Image) -> np.ndarray:
    import torch

    pixels = naive_encoder.preprocess(image).unsqueeze(0)
    with torch.inference_mode():
        features = naive_encoder.model.encode_image(pixels.to(naive_encoder.device))
    return torch.nn.functional.normalize(features.float(), dim=-1).cpu().numpy()[0]


def _query_compare(naive, meepo, photos: list[bytes], repeats: int) -> dict:
    naive(photos[0]), meepo(photos[0])
    naive_ms, meepo_ms = _timed_in_turns(naive, meepo, photos, repeats)
    cosines = [float(np.dot(naive(data), meepo(data))) for data in photos]
    return {
        "naive": _percentiles(naive_ms),
        "meepo": _percentiles(meepo_ms),
        "speedup_p50": round(float(np.percentile(naive_ms, 50) / np.percentile(meepo_ms, 50)), 2),
        "cosine_to_naive_min": round(min(cosines), 5),
    }
