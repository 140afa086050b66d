"""Versioned FAISS indexes on disk, switched in atomically.

Layout under MEEPO_INDEX_DIR:
    CURRENT                     the name of the version in service (replaced with os.replace)
    v20261122-021500-123456/ one build: index.faiss, ids.npy (row -> ItemImage id), meta.json
A crash while building leaves at most an unreferenced folder; the one in service is never touched.
"""

import json
import math
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
TRAINING_SAMPLE = 131_072
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
    """Exact search while a brute-force scan is a few milliseconds; above, IVF over 8-bit codes.

    IVF-SQ8 was the best of the FAISS families measured for CLIP-like vectors on a 2-core CPU
    (issue #4: HNSW over SQ8 does not fit 600 bytes a vector, PQ ranks text queries poorly): at 1M
    vectors, IVF8192,SQ8 answers in under 3 ms at recall@10 ≥ 0.95 for text and image queries, in
    545 bytes a vector instead of 2,056 (README, Performance).
    """
    if count <= settings.MEEPO_EXACT_INDEX_MAX:
        return "flat"
    return f"ivf{_lists_for(count)},sq8"


def _lists_for(count: int) -> int:
    """About 8·√n inverted lists, rounded to a power of two: 2048 at 100k, 8192 at 1M.

    Finer lists than the usual 4·√n: CLIP vectors cluster tightly, and at 1M, 8192 lists with 64
    probed found more (recall 0.976) than 4096 lists with 96 probed (0.967), in less time.
    """
    return 2 ** round(math.log2(8 * math.sqrt(count)))


def default_nprobe(index_type: str, *, text: bool = False) -> int | None:
    """Inverted lists searched per query; text queries search half as many again."""
    if not index_type.startswith("ivf"):
        return None
    nprobe = settings.MEEPO_IVF_NPROBE or 64
    # Text vectors sit apart from image vectors (CLIP's modality gap), so their nearest images are
    # spread over more lists: at 1M, 64 lists found 0.946 of them, 96 lists 0.960.
    return nprobe * 3 // 2 if text else nprobe


def make_index(vectors: np.ndarray, index_type: str):
    import faiss

    count, dimension = vectors.shape
    if index_type == "flat":
        index = faiss.IndexFlatIP(dimension)
    elif index_type == "sq8":
        index = faiss.IndexScalarQuantizer(dimension, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)
    elif index_type.startswith("ivf"):
        index = faiss.index_factory(dimension, index_type.upper(), faiss.METRIC_INNER_PRODUCT)
    else:
        raise ValueError(f"unknown index type {index_type!r}")
    if count and not index.is_trained:
        # k-means needs a few dozen points a list, not the whole catalogue.
        sample = (
            vectors[np.random.default_rng(0).permutation(count)[:TRAINING_SAMPLE]]
            if count > TRAINING_SAMPLE
            else vectors
        )
        index.train(sample)
    if count:
        index.add(vectors)
    return index


def windows_index_type(count: int) -> str:
    """Windows multiply the vector count, so their index always stores 8-bit codes (a quarter of
    float32): an exact scan of them while that is fast, IVF above MEEPO_WINDOWS_EXACT_MAX."""
    return "sq8" if count <= settings.MEEPO_WINDOWS_EXACT_MAX else f"ivf{_lists_for(count)},sq8"


def build_index(
    *,
    vectors: np.ndarray,
    ids: np.ndarray,
    spec: ModelSpec,
    dimension: int,
    windows: WindowSet | None = None,
    content: str = "",
) -> Path:
    """Write a new index version and put it in service; returns its folder. `content` is the
    digest of the catalogue's vectors it was built from (embedding.stored_content)."""
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
        "nprobe": default_nprobe(index_type),
        "text_nprobe": default_nprobe(index_type, text=True),
        "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "build_seconds": round(time.monotonic() - started, 3),
        "id_map": IDS_FILE,
        "content": content,
    }
    if windows is not None and len(windows.ids):
        meta["windows"] = _write_windows(building, windows)
    (building / META_FILE).write_text(json.dumps(meta, indent=2))
    for file in building.iterdir():
        _fsync(file)
    _fsync(building)
    version = root / name
    os.replace(building, version)
    _switch_to(version)
    remove_old_versions(keep=settings.MEEPO_INDEX_KEEP)
    return version


def _write_windows(folder: Path, windows: WindowSet) -> dict:
    import faiss

    vectors = np.ascontiguousarray(windows.vectors, dtype=np.float32)
    kind = windows_index_type(len(vectors))
    index = make_index(vectors, kind)
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
        "nprobe": default_nprobe(kind),
        "text_nprobe": default_nprobe(kind, text=True),
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


def remove_leftovers() -> None:
    """Delete what killed builds left: half-written folders (as big as an index) and pointer files.
    Only while holding the embed_catalog lock: a build in progress looks the same."""
    root = index_dir()
    for leftover in root.glob(".building-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    for leftover in root.glob(f".{POINTER}.*"):
        leftover.unlink(missing_ok=True)


def remove_old_versions(*, keep: int) -> None:
    """Delete all but the newest `keep` versions (workers still reading an old one keep their open
    file; on POSIX its pages stay valid until they switch) and leftovers of killed builds."""
    root = index_dir()
    current = current_version()
    remove_leftovers()
    versions = sorted((path for path in root.glob("v*") if path.is_dir()), reverse=True)
    for old in versions[keep:]:
        if old != current:
            shutil.rmtree(old, ignore_errors=True)
