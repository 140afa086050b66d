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
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from django.conf import settings

from pipeline.encoder import ModelSpec

POINTER = "CURRENT"
INDEX_FILE = "index.faiss"
IDS_FILE = "ids.npy"
META_FILE = "meta.json"


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


def build_index(*, vectors: np.ndarray, ids: np.ndarray, spec: ModelSpec, dimension: int) -> Path:
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
    (building / META_FILE).write_text(json.dumps(meta, indent=2))
    for file in building.iterdir():
        _fsync(file)
    version = root / name
    os.replace(building, version)
    _switch_to(version)
    remove_old_versions(keep=settings.MEEPO_INDEX_KEEP)
    return version


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
