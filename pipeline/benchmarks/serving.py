"""HTTP and memory benchmarks against the real thing: gunicorn with deploy/gunicorn.conf.py over a
large synthetic catalogue in a throwaway data directory, loaded from a second process."""

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEMO_CSV = ROOT / "catalog" / "demo" / "catalogue.csv"


def populate(count: int) -> None:
    """Fill the configured database with `count` embedded items and build the index (run inside a
    Django process whose MEEPO_DATA_DIR is a throwaway folder)."""
    import hashlib

    import numpy as np

    from catalog.models import Item, ItemImage
    from pipeline.embedding import rebuild_index_if_stale
    from pipeline.encoder import configured_model, get_encoder
    from pipeline.models import ImageVector
    from pipeline.synthetic import catalogue_vectors

    spec = configured_model()
    encoder = get_encoder()
    vectors = catalogue_vectors(count, encoder.dimension, seed=3).astype(np.float16)
    chunk = 5000
    for start in range(0, count, chunk):
        numbers = range(start, min(count, start + chunk))
        items = Item.objects.bulk_create(
            [Item(title=f"Benchmark item {n}", category=f"Category {n % 20}", price=n % 100) for n in numbers]
        )
        shas = [hashlib.sha256(str(n).encode()).hexdigest() for n in numbers]
        images = ItemImage.objects.bulk_create(
            [
                ItemImage(
                    item=item,
                    sha256=sha,
                    width=800,
                    height=600,
                    embedding_state=ItemImage.State.EMBEDDED,
                    embedded_model=spec.key,
                    embedded_sha256=sha,
                )
                for item, sha in zip(items, shas, strict=True)
            ]
        )
        ImageVector.objects.bulk_create(
            [
                ImageVector(image=image, model=spec.key, sha256=image.sha256, data=vectors[n].tobytes())
                for image, n in zip(images, numbers, strict=True)
            ]
        )
    rebuild_index_if_stale(spec=spec, layout=None, force=True, encoder=encoder)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rss_mb(pid: int, field: str = "VmHWM") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def _workers(master: int) -> list[int]:
    children = Path(f"/proc/{master}/task/{master}/children")
    return [int(pid) for pid in children.read_text().split()] if children.exists() else []


def _manage(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True, capture_output=True, text=True
    )


def embed_catalog_peak_rss(env: dict) -> dict:
    """Peak RSS of one embed_catalog run over the demo catalogue, with its windows."""
    _manage(env, "migrate", "-v0")
    _manage(env, "import_catalog", str(DEMO_CSV))
    process = subprocess.Popen(
        [sys.executable, "manage.py", "embed_catalog"], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
    )
    # VmHWM of the running process, not getrusage: a forked child's ru_maxrss counts the pages it
    # shared with this (large) benchmark process before exec.
    peak = 0.0
    while process.poll() is None:
        try:
            peak = max(peak, _rss_mb(process.pid))
        except (FileNotFoundError, ProcessLookupError):
            break
        time.sleep(0.1)
    return {"embed_catalog_peak_rss_mb": peak, "summary": process.stdout.read().strip()}


def http(*, items: int, seconds: float, concurrency: int, mixed_seconds: float = 0) -> dict:
    with tempfile.TemporaryDirectory(prefix="meepo-bench-") as folder:
        env = {key: value for key, value in os.environ.items() if key != "DATABASE_URL"}
        env["MEEPO_DATA_DIR"] = str(Path(folder) / "embed")
        memory = embed_catalog_peak_rss(env)
        port = _free_port()
        env.update(
            MEEPO_DATA_DIR=str(Path(folder) / "serve"),
            MEEPO_BIND=f"127.0.0.1:{port}",
            MEEPO_ACCESS_LOG="",
            MEEPO_WEB_WORKERS="2",
            MEEPO_RATE_LIMIT="off",  # one load generator is every client at once
        )
        _manage(env, "migrate", "-v0")
        code = f"import django; django.setup(); from pipeline.benchmarks.serving import populate; populate({items})"
        subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, env={**env, "DJANGO_SETTINGS_MODULE": "meepo.settings"}, check=True
        )
        server = subprocess.Popen(
            [str(Path(sys.executable).parent / "gunicorn"), "-c", "deploy/gunicorn.conf.py", "meepo.wsgi"],
            cwd=ROOT,
            env=env,
            stderr=subprocess.DEVNULL,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            _wait_for(base + "/healthz")
            load = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pipeline.benchmarks.load",
                    base,
                    str(seconds),
                    str(concurrency),
                    str(mixed_seconds),
                ],
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=True,
            )
            result = json.loads(load.stdout)
            result["items"] = items
            workers = _workers(server.pid)
            result["web_worker_peak_rss_mb"] = max((_rss_mb(pid) for pid in workers), default=0.0)
            # After the load: what a worker holds on to (the peak counts memory since given back).
            result["web_worker_rss_mb"] = max((_rss_mb(pid, "VmRSS") for pid in workers), default=0.0)
            result.update(memory)
            return result
        finally:
            server.terminate()
            server.wait(timeout=30)


def _wait_for(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5):  # noqa: S310 (our own gunicorn on loopback)
                return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"gunicorn did not answer {url}")
