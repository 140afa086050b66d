"""A small region-search benchmark built from the catalogue itself (issue #3).

Three kinds of query, each made from a catalogue image whose item is the right answer:
- aligned: a crop that is exactly one of the image's windows;
- crop: a random crop (30–70% of the short side) anywhere in the image;
- composite: such a crop pasted, rescaled, at a random place into another catalogue image.
For each mode (full, region, both) and each set of region weights it reports how often the right
item is first (hit@1) and in the top 5 (hit@5), and the mean time from query photo to results.
"""

import random
import time
from dataclasses import dataclass

import numpy as np
from django.conf import settings
from django.test import override_settings

from catalog.images import load_rgb
from catalog.models import ItemImage
from pipeline.window_embedding import configured_layout
from pipeline.windows import windows
from search import searcher

KINDS = ("aligned", "crop", "composite")


@dataclass
class Query:
    kind: str
    item_id: int
    image: object  # PIL image


def make_queries(*, per_kind: int, seed: int = 0) -> list[Query]:
    rng = random.Random(seed)
    images = list(
        ItemImage.objects.filter(embedding_state=ItemImage.State.EMBEDDED, item__active=True).select_related("item")
    )
    if len(images) < 2:
        raise ValueError("the benchmark needs at least two embedded catalogue images (run embed_catalog)")
    decoded = {image.id: load_rgb(image.read_bytes(), max_pixels=settings.MEEPO_MAX_IMAGE_PIXELS) for image in images}
    layout = configured_layout()
    queries = []
    for number in range(per_kind):
        image = images[number % len(images)]
        pixels = decoded[image.id]
        if layout:
            x, y, w, h = rng.choice(windows(pixels.width, pixels.height, layout))
            queries.append(Query("aligned", image.item_id, pixels.crop((x, y, x + w, y + h))))
        crop = _random_crop(pixels, rng)
        queries.append(Query("crop", image.item_id, crop))
        background = decoded[rng.choice([other.id for other in images if other.item_id != image.item_id])]
        queries.append(Query("composite", image.item_id, _paste(crop, background.copy(), rng)))
    return queries


def _random_crop(pixels, rng: random.Random):
    short = min(pixels.width, pixels.height)
    side = max(16, int(short * rng.uniform(0.3, 0.7)))
    x = rng.randint(0, pixels.width - side)
    y = rng.randint(0, pixels.height - side)
    return pixels.crop((x, y, x + side, y + side))


def _paste(crop, background, rng: random.Random):
    side = max(16, int(min(background.size) * rng.uniform(0.3, 0.6)))
    patch = crop.resize((side, side))
    background.paste(patch, (rng.randint(0, background.width - side), rng.randint(0, background.height - side)))
    return background


def run(*, per_kind: int, weight_sets: list[tuple[float, float, float]], seed: int = 0) -> dict:
    queries = make_queries(per_kind=per_kind, seed=seed)
    searcher.served_index()
    vectors, encode_ms = [], []
    for query in queries:
        started = time.perf_counter()
        vectors.append(searcher.image_query_vector(query.image))
        encode_ms.append((time.perf_counter() - started) * 1000)
    report = {"queries": {kind: sum(q.kind == kind for q in queries) for kind in KINDS}, "results": []}
    for weights in weight_sets:
        with override_settings(MEEPO_REGION_WEIGHTS=weights):
            for mode in searcher.MODES:
                report["results"].append(_score(queries, vectors, encode_ms, mode=mode, weights=weights))
    return report


def _score(queries, vectors, encode_ms, *, mode: str, weights) -> dict:
    row = {"mode": mode, "weights": list(weights)}
    ranks, search_ms = [], []
    for query, vector in zip(queries, vectors, strict=True):
        started = time.perf_counter()
        found = searcher.search_by_vector(vector=vector, limit=5, mode=mode)
        search_ms.append((time.perf_counter() - started) * 1000)
        ids = [hit.item.id for hit in found.hits]
        ranks.append((query.kind, ids.index(query.item_id) if query.item_id in ids else None))
    for kind in KINDS:
        mine = [rank for k, rank in ranks if k == kind]
        if mine:
            row[kind] = {
                "hit@1": round(sum(rank == 0 for rank in mine) / len(mine), 3),
                "hit@5": round(sum(rank is not None for rank in mine) / len(mine), 3),
            }
    row["mean_ms"] = round(float(np.mean(encode_ms)) + float(np.mean(search_ms)), 2)
    row["mean_search_ms"] = round(float(np.mean(search_ms)), 2)
    return row
