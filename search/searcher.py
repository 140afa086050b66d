"""Searching the served index: opened lazily once per worker, reopened when a new version is switched in."""

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from django.conf import settings

from catalog.models import Item, ItemImage
from pipeline import index as index_store
from pipeline.encoder import configured_model, get_encoder


class IndexNotReady(RuntimeError):
    """Search cannot run yet; the message tells the operator what to do."""


@dataclass
class ServedIndex:
    version: Path
    meta: dict
    index: object  # a faiss.Index
    ids: np.ndarray

    @property
    def size(self) -> int:
        return int(self.index.ntotal)

    def nearest(self, vector: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(image ids, scores) of the k nearest vectors, best first."""
        k = min(k, self.size)
        if k <= 0:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
        query = np.ascontiguousarray(vector.reshape(1, -1), dtype=np.float32)
        if self.meta["index_type"] == "hnsw":
            import faiss

            params = faiss.SearchParametersHNSW(efSearch=max(settings.MEEPO_HNSW_EF_SEARCH, k))
            scores, rows = self.index.search(query, k, params=params)
        else:
            scores, rows = self.index.search(query, k)
        keep = rows[0] >= 0
        return self.ids[rows[0][keep]], scores[0][keep]


def _open(version: Path) -> ServedIndex:
    import faiss

    # One query is too small to split across threads: OpenMP start-up costs more than it saves
    # (7.5 ms with one thread vs 48 ms with two on a 100k flat index, issue #4).
    faiss.omp_set_num_threads(1)
    meta = index_store.read_meta(version)
    spec = configured_model()
    if meta["model_key"] != spec.key:
        raise IndexNotReady(
            f"The search index was built with {meta['model_key']}, but Meepo is configured for {spec.key}. "
            "Run: python manage.py embed_catalog"
        )
    # Memory-mapped where FAISS allows it, so every worker shares one copy in the page cache.
    flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if meta["index_type"] == "flat" else 0
    index = faiss.read_index(str(version / index_store.INDEX_FILE), flags)
    ids = np.load(version / index_store.IDS_FILE, mmap_mode="r")
    return ServedIndex(version=version, meta=meta, index=index, ids=ids)


_lock = threading.Lock()
_served: dict[str, object] = {"stamp": None, "index": None}


def served_index() -> ServedIndex:
    """The index in service. One stat() per call notices a newly switched version."""
    pointer = index_store.index_dir() / index_store.POINTER
    try:
        stat = os.stat(pointer)
    except FileNotFoundError:
        raise IndexNotReady("The catalogue has not been indexed yet. Run: python manage.py embed_catalog") from None
    stamp = (stat.st_ino, stat.st_mtime_ns, settings.MEEPO_CLIP_MODEL, settings.MEEPO_CLIP_PRETRAINED)
    if _served["stamp"] != stamp:
        with _lock:
            if _served["stamp"] != stamp:
                version = index_store.current_version()
                if version is None:
                    raise IndexNotReady("The search index is missing. Run: python manage.py embed_catalog")
                _served["index"] = _open(version)
                _served["stamp"] = stamp
    return _served["index"]


@dataclass
class Hit:
    item: Item
    image: ItemImage
    score: float


@dataclass
class Results:
    hits: list[Hit]
    total: int


def search_by_vector(
    *, vector: np.ndarray, limit: int, offset: int = 0, category: str = "", exclude_item_id: int | None = None
) -> Results:
    """One result per active item (its best image), best first.

    The index holds images of hidden items too (hiding takes effect at once, without a rebuild), so
    hits are filtered here, widening the search until the page is full or MEEPO_MAX_RESULTS is reached.
    """
    served = served_index()
    wanted = offset + limit
    cap = min(served.size, settings.MEEPO_MAX_RESULTS * 4)
    pool = min(cap, max(100, wanted * 4))
    while True:
        image_ids, scores = served.nearest(vector, pool)
        hits = _best_image_per_item(image_ids, scores, category=category, exclude_item_id=exclude_item_id)
        if len(hits) >= wanted or pool >= cap:
            break
        pool = min(cap, pool * 4)
    hits = hits[: settings.MEEPO_MAX_RESULTS]
    return Results(hits=hits[offset:wanted], total=len(hits))


def _best_image_per_item(image_ids, scores, *, category: str, exclude_item_id: int | None) -> list[Hit]:
    images = ItemImage.objects.filter(id__in=[int(i) for i in image_ids], item__active=True).select_related("item")
    if category:
        images = images.filter(item__category=category)
    if exclude_item_id is not None:
        images = images.exclude(item_id=exclude_item_id)
    by_id = {image.id: image for image in images}
    hits, seen = [], set()
    for image_id, score in zip(image_ids, scores, strict=True):
        image = by_id.get(int(image_id))
        if image is None or image.item_id in seen:
            continue
        seen.add(image.item_id)
        hits.append(Hit(item=image.item, image=image, score=float(score)))
    return hits


class _TextVectorCache:
    """Shoppers repeat queries ("fork", "red dress"); the text tower is the slow part of a text search."""

    def __init__(self, size: int = 2048):
        self.size = size
        self.entries: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, query: str) -> np.ndarray:
        encoder = get_encoder()
        key = (encoder.spec.key, query)
        with self.lock:
            if key in self.entries:
                self.entries.move_to_end(key)
                return self.entries[key]
        vector = encoder.encode_texts([query])[0]
        with self.lock:
            self.entries[key] = vector
            while len(self.entries) > self.size:
                self.entries.popitem(last=False)
        return vector


text_vectors = _TextVectorCache()


def normalise_query(query: str) -> str:
    return " ".join(query.split())


def search_by_text(*, query: str, limit: int, offset: int = 0, category: str = "") -> Results:
    served_index()  # fail with the operator's message before loading the model
    vector = text_vectors.get(normalise_query(query).lower())
    return search_by_vector(vector=vector, limit=limit, offset=offset, category=category)


def image_query_vector(image) -> np.ndarray:
    return get_encoder().encode_images([image])[0]


def item_vector(item: Item) -> np.ndarray | None:
    """The stored vector of the item's first embedded image (no model needed)."""
    from pipeline.models import ImageVector

    spec = configured_model()
    row = (
        ImageVector.objects.filter(image__item=item, model=spec.key)
        .order_by("image__position", "image_id")
        .values_list("data", flat=True)
        .first()
    )
    if row is None:
        return None
    vector = np.frombuffer(row, dtype=np.float16).astype(np.float32)
    return vector / max(float(np.linalg.norm(vector)), 1e-12)


def similar_items(*, item: Item, limit: int, offset: int = 0) -> Results:
    vector = item_vector(item)
    if vector is None:
        return Results(hits=[], total=0)
    return search_by_vector(vector=vector, limit=limit, offset=offset, exclude_item_id=item.id)
