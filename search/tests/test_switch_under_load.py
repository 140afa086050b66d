"""A real gunicorn under continuous load while embed_catalog switches in new index versions (issue 5)."""

import json
import threading
import time
from dataclasses import dataclass
from urllib.parse import quote

import pytest

from meepo.testing import DEMO_DIR, demo_rows, write_catalogue
from search.tests.test_gunicorn import get, post_photo, site  # noqa: F401 (the site fixture)

WORDS = ["cat", "red mug", "night sky", "portrait", "bridge", "flowers", "coffee", "bird"]


@dataclass
class Answer:
    started: float
    finished: float
    status: int | str  # the HTTP status, or the exception when there was no HTTP answer
    total: int | None = None


def search_continuously(base: str, number: int, stop: threading.Event, answers: list[Answer]) -> None:
    """Text searches (every third with regions) or, for client 0, photo searches, until `stop`."""
    photo = (DEMO_DIR / "images" / "chelsea-cat.jpg").read_bytes()
    count = 0
    while not stop.is_set():
        count += 1
        started = time.monotonic()
        try:
            if number == 0:
                status, found = post_photo(base + "/api/search/image?limit=5", photo)
            else:
                query = quote(f"{WORDS[(number + count) % len(WORDS)]} {count}")
                regions = "true" if count % 3 == 0 else "false"
                status, body = get(f"{base}/api/search?q={query}&limit=5&regions={regions}")
                found = json.loads(body) if status == 200 else None
            total = found["total"] if status == 200 else None
        except Exception as error:  # every failure counts, whatever it is
            status, total = repr(error), None
        answers.append(Answer(started=started, finished=time.monotonic(), status=status, total=total))
        # A steady stream, not a flood: the two cores must still run embed_catalog.
        time.sleep(0.1)


@pytest.fixture
def site_env() -> dict:
    return {
        # The fewest versions Meepo keeps: each switch prunes the version before the previous one.
        "MEEPO_INDEX_KEEP": "2",
        # Four windows an image instead of up to 16 keep the runs short; region search works the same.
        "MEEPO_WINDOWS": "relative:0.5:0",
    }


@pytest.mark.slow
def test_workers_under_load_answer_every_search_while_new_indexes_are_switched_in(site, tmp_path):  # noqa: F811
    base, manage, _ = site
    log = tmp_path / "gunicorn.log"
    index_dir = tmp_path / "var" / "index"
    rows = demo_rows()
    stop, answers = threading.Event(), []
    clients = [threading.Thread(target=search_continuously, args=(base, n, stop, answers)) for n in range(3)]
    for client in clients:
        client.start()
    runs = []  # (started, finished, items in the new index)
    try:
        time.sleep(2)
        for catalogue, options, items in ((rows[8:20], [], 20), (rows[20:], [], 31), (None, ["--full"], 31)):
            if catalogue:
                manage("import_catalog", str(write_catalogue(tmp_path / f"more-{items}", catalogue)))
            started = time.monotonic()
            summary = manage("embed_catalog", *options)
            runs.append((started, time.monotonic(), items))
            print(f"\nembed_catalog {' '.join(options)} took {runs[-1][1] - started:.1f} s: {summary.strip()}")
            assert f"index rebuilt with {items} vectors" in summary
            time.sleep(1)
    finally:
        stop.set()
        for client in clients:
            client.join(timeout=120)

    failures = [answer.status for answer in answers if answer.status != 200]
    print(f"{len(answers)} searches during {len(runs)} index switches, {len(failures)} failed")
    assert failures == [], log.read_text()[-3000:]
    assert len(answers) >= 200
    assert "Traceback" not in log.read_text()
    # Searches went on during every run, not only between them.
    for started, finished, _ in runs:
        assert any(started < answer.started and answer.finished < finished for answer in answers)
    # Between runs every search sees the index the last run switched in: the old one until the switch,
    # the new one after it.
    last_finished, served = 0.0, 8
    for started, finished, items in runs:
        assert {answer.total for answer in answers if last_finished < answer.started and answer.finished < started} <= {
            served
        }
        last_finished, served = finished, items
    assert {answer.total for answer in answers if answer.started > last_finished} == {31}
    # Versions older than the two kept were pruned while workers were serving.
    assert len([path for path in index_dir.iterdir() if path.name.startswith("v")]) == 2

    status, body = get(base + "/api/search?q=anything&limit=100")
    found = json.loads(body)
    assert status == 200 and found["total"] == 31
    assert {result["title"] for result in found["results"]} == {row["title"] for row in rows}
