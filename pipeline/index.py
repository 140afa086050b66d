"""Versioned FAISS indexes on disk, switched in atomically.

Layout under MEEPO_INDEX_DIR:
    CURRENT                     the name of the version in service (replaced with os.replace)
    v20261122-021500-123456/ one build: index.faiss, ids.npy (row -> ItemImage id), meta.json
A crash while building leaves at most an unreferenced folder; the one in service is never touched.
"""

import json
import os
import secrets
import shutil
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from django.conf import settings

from pipeline.encoder import ModelSpec

POINTER = "CURRENT"
INDEX_FILE = "index.faiss"
IDS_FILE = "ids.npy"
META_FILE = "meta.json"
WINDOWS_INDEX_FILE = "windows.faiss"
WINDOWS_IDS_FILE = "window_ids.npy"
WINDOWS_BOXES_FILE = "window_boxes.npy"


@dataclass
class WindowSet:
    """Window vectors for region search: row i is a window of image ids[i] at boxes[i] (x, y, w, h)."""

    vectors: np.ndarray
    ids: np.ndarray
    boxes: np.ndarray
    layout: str


def index_dir() -> Path:
    return Path(settings.MEEPO_INDEX_DIR)


def current_version() -> Path | None:
    try:
        name = (index_dir() / POINTER).read_text().strip()
    except FileNotFoundError:
        return None
    version = index_dir() / name
    return version if name and (version / META_FILE).is_file() else None


def read_meta(version: Path) -> dict:
    return json.loads((version / META_FILE).read_text())


def choose_index_type(count: int) -> str:
    return "flat" if count <= settings.MEEPO_EXACT_INDEX_MAX else "hnsw"


def make_index(vectors: np.ndarray, index_type: str):
    import faiss

    dimension = vectors.shape[1]
    if index_type == "flat":
        index = faiss.IndexFlatIP(dimension)
    elif index_type == "hnsw":
        index = faiss.IndexHNSWFlat(dimension, settings.MEEPO_HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 80
    else:
        raise ValueError(f"unknown index type {index_type!r}")
    if len(vectors):
        index.add(vectors)
    return index


def make_windows_index(vectors: np.ndarray):
    """Windows multiply the vector count, so their index stores 8-bit codes (a quarter of float32):
    an exact scan of them while that is fast, IVF above MEEPO_WINDOWS_EXACT_MAX."""
    import faiss

    count, dimension = vectors.shape
    if count <= settings.MEEPO_WINDOWS_EXACT_MAX:
        index = faiss.IndexScalarQuantizer(dimension, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)
        kind = "sq8"
    else:
        lists = int(4 * count**0.5)
        quantizer = faiss.IndexFlatIP(dimension)
        index = faiss.IndexIVFScalarQuantizer(
            quantizer, dimension, lists, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
        )
        kind = f"ivf{lists},sq8"
    sample = vectors[np.random.default_rng(0).permutation(count)[:200_000]] if count > 200_000 else vectors
    if count:
        index.train(sample)
        index.add(vectors)
    return index, kind


def build_index(
    *, vectors: np.ndarray, ids: np.ndarray, spec: ModelSpec, dimension: int, windows: WindowSet | None = None
) -> Path:
    """Write a new index version and put it in service; returns its folder."""
    import faiss

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    index_type = choose_index_type(len(vectors))
    started = time.monotonic()
    index = make_index(vectors, index_type)
    root = index_dir()
    root.mkdir(parents=True, exist_ok=True)
    name = f"v{datetime.now(UTC):%Y%m%d-%H%M%S-%f}"
    building = root / f".building-{name}"
    building.mkdir()
    faiss.write_index(index, str(building / INDEX_FILE))
    np.save(building / IDS_FILE, np.asarray(ids, dtype=np.int64))
    meta = {
        "model": spec.name,
        "pretrained": spec.pretrained,
        "model_key": spec.key,
        "dimension": dimension,
        "vectors": len(vectors),
        "index_type": index_type,
        "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "build_seconds": round(time.monotonic() - started, 3),
        "id_map": IDS_FILE,
    }
    if windows is not None and len(windows.ids):
        meta["windows"] = _write_windows(building, windows)
    (building / META_FILE).write_text(json.dumps(meta, indent=2))
    for file in building.iterdir():
        _fsync(file)
    version = root / name
    os.replace(building, version)
    _switch_to(version)
    remove_old_versions(keep=settings.MEEPO_INDEX_KEEP)
    return version


def _write_windows(folder: Path, windows: WindowSet) -> dict:
    import faiss

    index, kind = make_windows_index(np.ascontiguousarray(windows.vectors, dtype=np.float32))
    faiss.write_index(index, str(folder / WINDOWS_INDEX_FILE))
    np.save(folder / WINDOWS_IDS_FILE, np.asarray(windows.ids, dtype=np.int64))
    np.save(folder / WINDOWS_BOXES_FILE, np.asarray(windows.boxes, dtype=np.int32))
    count = len(windows.ids)
    stored = sum((folder / name).stat().st_size for name in (WINDOWS_INDEX_FILE, WINDOWS_IDS_FILE, WINDOWS_BOXES_FILE))
    return {
        "layout": windows.layout,
        "vectors": count,
        "images": len(np.unique(windows.ids)),
        "index_type": kind,
        "bytes_per_vector": round(stored / count, 1),
    }


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _switch_to(version: Path) -> None:
    root = version.parent
    temporary = root / f".{POINTER}.{secrets.token_hex(4)}"
    with open(temporary, "w") as handle:
        handle.write(version.name)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, root / POINTER)
    _fsync(root)


def remove_old_versions(*, keep: int) -> None:
    """Delete all but the newest `keep` versions (workers still reading an old one keep their open
    file; on POSIX its pages stay valid until they switch) and leftovers of killed builds."""
    root = index_dir()
    current = current_version()
    for leftover in root.glob(".building-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    for leftover in root.glob(f".{POINTER}.*"):
        leftover.unlink(missing_ok=True)
    versions = sorted((path for path in root.glob("v*") if path.is_dir()), reverse=True)
    for old in versions[keep:]:
        if old != current:
            shutil.rmtree(old, ignore_errors=True)
