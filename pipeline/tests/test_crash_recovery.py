"""embed_catalog killed with SIGKILL, in a real process with a real SQLite file."""

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import faiss
import numpy as np
import pytest

from meepo.testing import DEMO_DIR

ROOT = Path(__file__).resolve().parents[2]


def manage(env: dict, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, check=check
    )


def embedded_count(database: Path) -> int:
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5) as connection:
        return connection.execute("SELECT count(*) FROM catalog_itemimage WHERE embedding_state='embedded'").fetchone()[
            0
        ]


def served_index_is_whole(data_dir: Path) -> int:
    pointer = data_dir / "index" / "CURRENT"
    version = data_dir / "index" / pointer.read_text().strip()
    index = faiss.read_index(str(version / "index.faiss"))
    ids = np.load(version / "ids.npy")
    assert index.ntotal == len(ids)
    return index.ntotal


@pytest.mark.slow
def test_a_killed_run_loses_no_finished_work_and_the_next_run_resumes(tmp_path):
    data_dir = tmp_path / "var"
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update(MEEPO_DATA_DIR=str(data_dir), MEEPO_CLIP_MODEL="meepo-tiny", MEEPO_EMBED_BATCH_SIZE="2")
    database = data_dir / "meepo.sqlite3"
    manage(env, "migrate", "-v0")
    manage(env, "import_catalog", str(DEMO_DIR / "catalogue.csv"))
    total = 31

    kills = 0
    for target in (4, 12, 20):
        run = subprocess.Popen(
            [sys.executable, "manage.py", "embed_catalog"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 120
        while embedded_count(database) < target and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        if run.poll() is None:
            os.kill(run.pid, signal.SIGKILL)
            kills += 1
        run.wait()
        done = embedded_count(database)
        assert done >= target
        # Whatever index a killed run left in service opens whole.
        if (data_dir / "index" / "CURRENT").exists():
            served_index_is_whole(data_dir)

    assert kills >= 2, "the runs finished before they could be killed; the test proves nothing"
    before = embedded_count(database)
    finished = manage(env, "embed_catalog")

    assert f"encoded {total - before}, skipped {before}, failed 0" in finished.stdout
    assert served_index_is_whole(data_dir) == total
    with sqlite3.connect(database) as connection:
        vectors = connection.execute("SELECT count(*) FROM pipeline_imagevector").fetchone()[0]
    assert vectors == total


def test_a_stale_lock_file_from_a_killed_run_does_not_block_the_next(tmp_path):
    data_dir = tmp_path / "var"
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update(MEEPO_DATA_DIR=str(data_dir), MEEPO_CLIP_MODEL="meepo-tiny")
    manage(env, "migrate", "-v0")
    (data_dir / "embed_catalog.lock").write_text("pid 999999")

    finished = manage(env, "embed_catalog")

    assert "encoded 0, skipped 0, failed 0" in finished.stdout


def test_importing_the_catalogue_and_the_views_does_not_import_torch_open_clip_or_faiss():
    code = (
        "import sys, django; django.setup();"
        "import catalog.models, catalog.admin, catalog.importing, search.views, search.api, meepo.urls,"
        " pipeline.embedding, pipeline.checks;"
        "print(sorted(m for m in ('torch', 'open_clip', 'faiss') if m in sys.modules))"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "meepo.settings"}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)

    assert result.stdout.strip() == "[]"
