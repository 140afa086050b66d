"""The real thing: gunicorn with deploy/gunicorn.conf.py, a SQLite file, the tiny model and FAISS."""

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from meepo.testing import DEMO_DIR, demo_rows, write_catalogue
from pipeline.benchmarks.load import multipart

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def post_photo(url: str, data: bytes) -> tuple[int, dict]:
    body, content_type = multipart(data)
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture
def site_env() -> dict:
    """Extra environment for the site's gunicorn; a test module overrides it."""
    return {}


@pytest.fixture
def site(tmp_path, site_env):
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    port = free_port()
    env.update(
        MEEPO_DATA_DIR=str(tmp_path / "var"),
        MEEPO_CLIP_MODEL="meepo-tiny",
        MEEPO_BIND=f"127.0.0.1:{port}",
        MEEPO_WEB_WORKERS="2",
        MEEPO_ACCESS_LOG="",
        **site_env,
    )

    def manage(*args) -> str:
        return subprocess.run(
            [sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True, capture_output=True, text=True
        ).stdout

    manage("migrate", "-v0")
    manage("import_catalog", str(write_catalogue(tmp_path / "first", demo_rows(8))))
    manage("embed_catalog")
    manage("collectstatic", "--noinput", "-v0")
    with gunicorn(env, tmp_path / "gunicorn.log") as base:
        yield base, manage, tmp_path


@contextlib.contextmanager
def gunicorn(env: dict, log: Path):
    """A real gunicorn with deploy/gunicorn.conf.py on env's MEEPO_BIND; yields its base URL.
    Its output goes to a file: a pipe nobody reads could fill up and stall the server."""
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "gunicorn"), "-c", "deploy/gunicorn.conf.py", "meepo.wsgi"],
        cwd=ROOT,
        env=env,
        stderr=log.open("w"),
    )
    base = f"http://{env['MEEPO_BIND']}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and server.poll() is None:
            try:
                if get(base + "/healthz")[0] == 200:
                    break
            except OSError:
                time.sleep(0.2)
        else:
            pytest.fail("gunicorn did not start: " + log.read_text()[-2000:])
        yield base
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.slow
def test_gunicorn_serves_search_and_picks_up_a_new_index(site):
    base, manage, tmp_path = site

    status, body = get(base + "/api/search?q=a+cat&limit=3")
    assert status == 200
    first = json.loads(body)
    assert first["total"] == 8 and len(first["results"]) == 3 and first["model"]["trained"] is False

    cat = (DEMO_DIR / "images" / "chelsea-cat.jpg").read_bytes()
    status, found = post_photo(base + "/api/search/image", cat)
    assert status == 200 and found["results"][0]["title"] == "Tabby cat print"
    assert found["results"][0]["score"] >= 0.99

    status, page = get(base + "/search?q=cat")
    assert status == 200 and b"Tabby cat print" in page
    status, _ = get(base + "/static/css/dist/styles.css")
    assert status == 200
    # /api/docs works offline: Swagger UI comes from the collected static files, not a CDN.
    assert get(base + "/static/ninja/swagger-ui-bundle.js")[0] == 200
    assert get(base + "/favicon.ico")[0] == 200

    # The nightly run switches in a bigger index while the workers keep running.
    manage("import_catalog", str(write_catalogue(tmp_path / "second", demo_rows(12)[8:])))
    manage("embed_catalog")
    totals = {json.loads(get(base + "/api/search?q=a+cat")[1])["total"] for _ in range(6)}
    assert totals == {12}


@pytest.mark.slow
def test_the_workers_load_the_model_before_their_first_search(site):
    base, _, tmp_path = site

    # Both workers answer these in turn; none of them has searched yet.
    loaded = {json.loads(get(base + "/api/status")[1])["model"]["loaded"] for _ in range(8)}

    assert loaded == {True}
    assert "not loaded" not in (tmp_path / "gunicorn.log").read_text()


@pytest.mark.slow
def test_a_chunked_upload_without_a_length_is_refused_with_a_clear_error(site):
    base, _, _ = site
    host, port = base.removeprefix("http://").split(":")
    body, content_type = multipart((DEMO_DIR / "images" / "chelsea-cat.jpg").read_bytes())
    with socket.create_connection((host, int(port)), timeout=30) as connection:
        head = (
            f"POST /api/search/image HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n"
            "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        )
        connection.sendall(head.encode() + f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n")
        reply = b""
        while chunk := connection.recv(65536):
            reply += chunk
    status_line, _, rest = reply.partition(b"\r\n")
    assert b" 411 " in status_line
    assert b"Content-Length" in rest.partition(b"\r\n\r\n")[2]


@pytest.mark.slow
def test_a_minute_of_mixed_text_and_photo_searches_has_no_errors(site):
    base, _, _ = site
    load = subprocess.run(
        [sys.executable, "-m", "pipeline.benchmarks.load", base, "2", "4", "60"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    report = json.loads(load.stdout)
    mixed = report["mixed_search"]
    assert mixed["errors"] == 0 and mixed["requests"] > 60, mixed
    assert all(report[phase]["errors"] == 0 for phase in ("text_search", "image_search")), report
