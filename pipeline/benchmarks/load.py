"""A load generator, run as its own process:

    python -m pipeline.benchmarks.load BASE_URL SECONDS CONCURRENCY [MIXED_SECONDS]

Half the time it warms up, then for SECONDS each of CONCURRENCY threads alternates between phases:
text searches (GET /api/search?q=) and photo searches (POST /api/search/image); then, for
MIXED_SECONDS, both at once (three text searches to one photo search). Before them, one client
alone for SECONDS / 2: text searches, then the shopper's results page (GET /search?q=, 24 results
rendered). Prints JSON.
Plain standard library: it must not share anything with the server under test.
"""

import http.client
import json
import sys
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import quote, urlsplit

import numpy as np

PHOTO = (Path(__file__).resolve().parents[2] / "catalog" / "demo" / "images" / "espresso-cup.jpg").read_bytes()
WORDS = ["red", "mug", "cat", "sky", "blue", "lamp", "chair", "dress", "fork", "tree", "night", "portrait"]


def multipart(data: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="q.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def _run(host: str, port: int, kind: str, seconds: float, concurrency: int) -> dict:
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds
    body, content_type = multipart(PHOTO)

    def worker(number: int) -> None:
        connection = http.client.HTTPConnection(host, port, timeout=60)
        count = 0
        while time.monotonic() < stop:
            count += 1
            started = time.perf_counter()
            # Unique queries: measures the text encoder, not the cache of repeated queries.
            query = quote(f"{WORDS[(number + count) % len(WORDS)]} {WORDS[(number * 7 + count) % len(WORDS)]} {count}")
            try:
                if kind == "page":
                    connection.request("GET", f"/search?q={query}")
                elif kind == "text" or (kind == "mixed" and count % 4):
                    connection.request("GET", f"/api/search?q={query}&limit=10")
                else:
                    connection.request("POST", "/api/search/image?limit=10", body, {"Content-Type": content_type})
                response = connection.getresponse()
                response.read()
                ok = response.status == 200
            except (OSError, http.client.HTTPException) as error:
                ok, response = False, None
                connection.close()
                connection = http.client.HTTPConnection(host, port, timeout=60)
                errors.append(error.__class__.__name__)
            elapsed = (time.perf_counter() - started) * 1000
            with lock:
                if ok:
                    latencies.append(elapsed)
                elif response is not None:
                    errors.append(str(response.status))

    threads = [threading.Thread(target=worker, args=(number,)) for number in range(concurrency)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    return {
        "requests": len(latencies),
        "errors": len(errors),
        "requests_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(float(np.percentile(latencies, 50)), 2) if latencies else None,
        "p99_ms": round(float(np.percentile(latencies, 99)), 2) if latencies else None,
    }


def main() -> None:
    base, seconds, concurrency = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
    mixed_seconds = float(sys.argv[4]) if len(sys.argv) > 4 else 0
    parts = urlsplit(base)
    for kind in ("text", "image"):  # warm every worker's model and index first
        _run(parts.hostname, parts.port, kind, max(2.0, seconds / 4), concurrency)
    report = {
        "concurrency": concurrency,
        "seconds": seconds,
        "text_search_one_client": _run(parts.hostname, parts.port, "text", seconds / 2, 1),
        "results_page_one_client": _run(parts.hostname, parts.port, "page", seconds / 2, 1),
        "text_search": _run(parts.hostname, parts.port, "text", seconds, concurrency),
        "image_search": _run(parts.hostname, parts.port, "image", seconds, concurrency),
    }
    if mixed_seconds:
        report["mixed_search"] = _run(parts.hostname, parts.port, "mixed", mixed_seconds, concurrency)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
