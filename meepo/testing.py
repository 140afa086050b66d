"""pytest plugin (loaded with -p from pyproject.toml): the tiny model, a data directory per test,
and small real catalogues built from the demo photos."""

import csv
import os
import shutil
import tempfile
from pathlib import Path

import pytest

# Before Django reads its settings: tests never touch the network or the real model.
os.environ["MEEPO_CLIP_MODEL"] = "meepo-tiny"
os.environ.pop("MEEPO_CLIP_PRETRAINED", None)
os.environ["MEEPO_DATA_DIR"] = tempfile.mkdtemp(prefix="meepo-tests-")
os.environ.setdefault("MEEPO_FETCH_HOST_DELAY", "0")
# The suite checks the CPU paths (their kernels and precisions) on every machine, a GPU box too;
# test_pixels.py checks the GPU's own step where there is one.
os.environ.setdefault("MEEPO_DEVICE", "cpu")
# Tests search far faster than a shopper; test_rate_limit.py turns the limit on where it is tested.
os.environ.setdefault("MEEPO_RATE_LIMIT", "off")

DEMO_DIR = Path(__file__).resolve().parent.parent / "catalog" / "demo"


@pytest.fixture
def data_dir(settings, tmp_path):
    """Everything the site writes goes to a fresh folder for each test."""
    root = tmp_path / "var"
    settings.MEEPO_DATA_DIR = root
    settings.MEDIA_ROOT = root / "media"
    settings.MEEPO_INDEX_DIR = root / "index"
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.filebased.FileBasedCache", "LOCATION": root / "cache"},
        "ratelimit": {"BACKEND": "django.core.cache.backends.filebased.FileBasedCache", "LOCATION": root / "ratelimit"},
    }
    return root


def demo_rows(count: int | None = None) -> list[dict]:
    with (DEMO_DIR / "catalogue.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return rows[:count] if count else rows


def write_catalogue(folder: Path, rows: list[dict]) -> Path:
    """A CSV catalogue in `folder` with copies of the rows' demo images beside it."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    for row in rows:
        for image in row["image"].split("|"):
            if not image.startswith("http"):
                target = folder / image
                if not target.exists() and (DEMO_DIR / image).exists():
                    shutil.copy(DEMO_DIR / image, target)
    path = folder / "catalogue.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0].keys()))
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture
def small_catalogue(db, data_dir, tmp_path):
    """Eight demo items imported into the database (not embedded yet)."""
    from catalog.importing import import_catalog

    report = import_catalog(path=write_catalogue(tmp_path / "source", demo_rows(8)))
    assert report.created == 8, report.problems
    from catalog.models import Item

    return list(Item.objects.order_by("id"))


@pytest.fixture
def indexed_catalogue(small_catalogue):
    """The eight items, embedded with the tiny model and indexed."""
    from pipeline.embedding import embed_catalog

    report = embed_catalog()
    assert report.encoded == 8 and report.failed == 0
    return small_catalogue
