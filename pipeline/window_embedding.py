"""Embedding catalogue images as overlapping windows, for region search (issue #3)."""

import math
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import numpy as np
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.db.models import F

from catalog.images import load_rgb
from catalog.models import ItemImage
from pipeline.batching import prefetched, read_files
from pipeline.encoder import Encoder, ModelSpec
from pipeline.models import WindowVectors
from pipeline.windows import Layout, parse_layout, windows

# Windows are encoded in batches of about this many crops (a few images' worth).
WINDOW_BATCH = 64


def configured_layout() -> Layout | None:
    """The window layout from MEEPO_WINDOWS, or None when region search is off."""
    if settings.MEEPO_WINDOWS.strip().lower() in ("off", "none", ""):
        return None
    try:
        return parse_layout(settings.MEEPO_WINDOWS, max_windows=settings.MEEPO_WINDOWS_MAX)
    except ValueError as error:
        raise ImproperlyConfigured(f"MEEPO_WINDOWS: {error}") from None


def current_windows(model_key: str, layout_key: str):
    """Window rows the index should hold: this model and layout, for bytes that are still current."""
    return WindowVectors.objects.filter(model=model_key, layout=layout_key, sha256=F("image__sha256"))


def images_needing_windows(model_key: str, layout_key: str):
    done = current_windows(model_key, layout_key).values("image_id")
    return (
        ItemImage.objects.filter(embedding_state=ItemImage.State.EMBEDDED, embedded_model=model_key)
        .exclude(id__in=done)
        .order_by("id")
    )


def embed_windows(
    *,
    encoder: Encoder,
    layout: Layout,
    iter_wrapper: Callable[[Iterable, int], Iterable] = lambda batches, total: batches,
) -> int:
    """Encode the windows of every image that lacks current ones; returns how many images."""
    todo = list(images_needing_windows(encoder.spec.key, layout.key).values_list("id", flat=True))
    per_batch = max(1, WINDOW_BATCH // 12)
    batches = [todo[start : start + per_batch] for start in range(0, len(todo), per_batch)]
    done = 0
    with ThreadPoolExecutor(max_workers=1) as pool, ThreadPoolExecutor(encoder.decoders) as decoders:
        cut = partial(_crops_of, encoder=encoder, layout=layout, decoders=decoders)
        if encoder.decodes_alongside:
            loaded = prefetched(batches, lambda images: cut(read_files(images, reader=decoders)), pool)
        else:
            # As for whole images (Encoder.decodes_alongside): on a CPU, cut with every core, then encode.
            loaded = map(cut, prefetched(batches, read_files, pool))
        for batch in iter_wrapper(loaded, len(todo)):
            done += _store_windows(*batch, encoder=encoder, layout=layout)
    return done


def _crops_of(read: tuple[list[ItemImage], list[bytes | str]], *, encoder, layout, decoders: ThreadPoolExecutor):
    images, contents = read
    crops, owners, boxes = [], [], []
    cut = partial(_windows_of, encoder=encoder, layout=layout)
    for image, image_windows in zip(images, decoders.map(cut, images, contents), strict=True):
        for box, crop in image_windows:
            crops.append(crop)
            owners.append(image)
            boxes.append(box)
    return images, crops, owners, boxes


def _windows_of(image: ItemImage, content: bytes | str, *, encoder: Encoder, layout: Layout) -> list:
    """Decode an image once and cut its windows, each prepared for the model: (box, crop) pairs.

    Boxes are in the image's full pixels (as stored at import); a JPEG is decoded only as finely as
    its smallest window needs (JPEG draft mode, 1/2 to 1/8 scale), as whole images are: a shop
    photo's full decode and the resizing of its large crops took 73 ms of the 480 ms its windows
    cost (ViT-B-32, 2-core CPU)."""
    if isinstance(content, str):
        return []  # unreadable: the full-image pass has marked it failed, or will next run
    try:
        boxes = windows(image.width, image.height, layout)
        draft_size = _draft_size(image, boxes, encoder)
        pixels = load_rgb(content, max_pixels=settings.MEEPO_MAX_IMAGE_PIXELS, draft_size=draft_size)
        if not boxes:  # sizes not recorded: place the windows on the decoded pixels
            boxes = windows(pixels.width, pixels.height, layout)
            across = down = 1.0
        else:
            across, down = pixels.width / image.width, pixels.height / image.height
        return [(box, encoder.prepare(pixels.crop(_corners(box, across, down)))) for box in boxes]
    except Exception:  # whatever one image does, the run goes on (the full-image pass says why)
        return []


def _draft_size(image: ItemImage, boxes, encoder: Encoder) -> tuple[int, int] | None:
    """The least size (both sides) a decode may shrink the image to: its smallest (square) window
    still as big as a whole image's draft."""
    if not boxes:
        return None
    side = math.ceil(min(image.width, image.height) * encoder.draft_size[0] / min(w for _, _, w, _ in boxes))
    return side, side


def _corners(box, across: float = 1.0, down: float = 1.0):
    x, y, w, h = box
    return round(x * across), round(y * down), round((x + w) * across), round((y + h) * down)


def _store_windows(images, crops, owners, boxes, *, encoder: Encoder, layout: Layout) -> int:
    if not crops:
        return 0
    vectors = np.vstack(
        [encoder.encode_pixels(encoder.stack(crops[i : i + WINDOW_BATCH])) for i in range(0, len(crops), WINDOW_BATCH)]
    )
    rows = []
    for image in images:
        mine = [index for index, owner in enumerate(owners) if owner is image]
        if not mine:
            continue
        rows.append(
            WindowVectors(
                image=image,
                model=encoder.spec.key,
                sha256=image.sha256,
                layout=layout.key,
                boxes=np.asarray([boxes[index] for index in mine], dtype=np.int32).tobytes(),
                data=vectors[mine].astype(np.float16).tobytes(),
            )
        )
    with transaction.atomic():
        current = dict(ItemImage.objects.filter(id__in=[row.image_id for row in rows]).values_list("id", "sha256"))
        rows = [row for row in rows if current.get(row.image_id) == row.sha256]
        WindowVectors.objects.bulk_create(
            rows,
            update_conflicts=True,
            unique_fields=["image"],
            update_fields=["model", "sha256", "layout", "boxes", "data"],
        )
    return len(rows)


def load_windows(spec: ModelSpec, layout: Layout) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(vectors float32, image ids int64, boxes int32 n×4) of every current window."""
    vectors, ids, boxes = [], [], []
    rows = current_windows(spec.key, layout.key).order_by("image_id").values_list("image_id", "boxes", "data")
    for image_id, box_bytes, data in rows.iterator(chunk_size=2000):
        image_boxes = np.frombuffer(box_bytes, dtype=np.int32).reshape(-1, 4)
        vectors.append(np.frombuffer(data, dtype=np.float16).reshape(len(image_boxes), -1))
        boxes.append(image_boxes)
        ids.append(np.full(len(image_boxes), image_id, dtype=np.int64))
    if not vectors:
        return np.empty((0, 0), dtype=np.float32), np.empty(0, dtype=np.int64), np.empty((0, 4), dtype=np.int32)
    matrix = np.vstack(vectors).astype(np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True).clip(min=1e-12)
    return matrix, np.concatenate(ids), np.vstack(boxes)
