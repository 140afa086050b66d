"""The index in service: opened lazily once per worker, reopened when a new version is switched in."""

import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from django.conf import settings

from pipeline import index as index_store
from pipeline.encoder import configured_model


class IndexNotReady(RuntimeError):
    """Search cannot run yet; the message tells the operator what to do."""


@dataclass
class WindowsIndex:
    index: object  # a faiss.Index of window vectors
    ids: np.ndarray  # row -> ItemImage id
    boxes: np.ndarray  # row -> (x, y, w, h) in that image's pixels
    counts: dict[int, int]  # ItemImage id -> how many windows it has
    meta: dict

    def nearest(self, vector: np.ndarray, k: int, *, text: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(image ids, boxes, scores) of the k nearest windows, best first."""
        k = min(k, int(self.index.ntotal))
        if k <= 0:
            return np.empty(0, dtype=np.int64), np.empty((0, 4), dtype=np.int32), np.empty(0, dtype=np.float32)
        scores, rows = _search(self.index, vector, k, _nprobe(self.meta, text))
        rows, scores = rows[0], scores[0]
        keep = rows >= 0
        return self.ids[rows[keep]], self.boxes[rows[keep]], scores[keep]


@dataclass
class ServedIndex:
    version: Path
    meta: dict
    index: object  # a faiss.Index of full-image vectors
    ids: np.ndarray
    windows: WindowsIndex | None

    @property
    def size(self) -> int:
        return int(self.index.ntotal)

    def nearest(self, vector: np.ndarray, k: int, *, text: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(image ids, scores) of the k nearest full images, best first; text queries search wider."""
        k = min(k, self.size)
        if k <= 0:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
        scores, rows = _search(self.index, vector, k, _nprobe(self.meta, text))
        keep = rows[0] >= 0
        return self.ids[rows[0][keep]], scores[0][keep]


def _nprobe(meta: dict, text: bool) -> int | None:
    # Versions built before text_nprobe existed search text like images.
    return (text and meta.get("text_nprobe")) or meta.get("nprobe")


def _search(index, vector: np.ndarray, k: int, nprobe: int | None):
    query = np.ascontiguousarray(vector.reshape(1, -1), dtype=np.float32)
    if nprobe:
        import faiss

        return index.search(query, k, params=faiss.SearchParametersIVF(nprobe=nprobe))
    return index.search(query, k)


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
    windows = None
    if "windows" in meta:
        window_ids = np.load(version / index_store.WINDOWS_IDS_FILE)
        images, counts = np.unique(window_ids, return_counts=True)
        windows = WindowsIndex(
            index=faiss.read_index(str(version / index_store.WINDOWS_INDEX_FILE)),
            ids=window_ids,
            boxes=np.load(version / index_store.WINDOWS_BOXES_FILE),
            counts=dict(zip(images.tolist(), counts.tolist(), strict=True)),
            meta=meta["windows"],
        )
    return ServedIndex(version=version, meta=meta, index=index, ids=ids, windows=windows)


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
