"""Per-client limits on searches: 429 with Retry-After, shared by every gunicorn worker."""

import json
import time

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from meepo.testing import DEMO_DIR
from search.tests.test_gunicorn import get, site  # noqa: F401 (the site fixture)


@pytest.fixture
def limited(settings, indexed_catalogue):
    # Hour-long windows: a test's few requests cannot straddle two of them in practice.
    settings.MEEPO_RATE_LIMIT = (3, 3600)
    return indexed_catalogue


def test_searches_past_the_limit_get_a_429_with_retry_after(client, limited):
    for _ in range(3):
        assert client.get("/api/search", {"q": "cat"}).status_code == 200
    response = client.get("/api/search", {"q": "cat"})
    assert response.status_code == 429
    assert "Too many searches" in response.json()["error"]
    assert 1 <= int(response["Retry-After"]) <= 3600


def test_every_kind_of_search_counts_towards_the_limit(client, limited):
    item = limited[0]
    assert client.get("/api/search", {"q": "cat"}).status_code == 200
    assert client.get(f"/api/items/{item.id}/similar").status_code == 200
    assert client.get("/search", {"q": "cat"}).status_code == 200
    page = client.get("/search", {"q": "cat"})
    assert page.status_code == 429
    assert b"Too many searches</h1>" in page.content and b"Something went wrong" not in page.content
    assert client.post("/api/search/url", {"url": "https://example.com/x.jpg"}, "application/json").status_code == 429


def test_a_photo_search_counts_once_however_many_of_its_pages_are_seen(client, limited):
    def search_with_a_photo():
        photo = SimpleUploadedFile("cat.jpg", (DEMO_DIR / "images" / "chelsea-cat.jpg").read_bytes(), "image/jpeg")
        return client.post("/search/photo", {"image": photo})

    for _ in range(3):
        response = search_with_a_photo()
        assert response.status_code == 302
        assert client.get(response["Location"]).status_code == 200  # the redirect to its results
    assert client.get(response["Location"] + "&page=2").status_code in (200, 404)
    assert search_with_a_photo().status_code == 429


def test_other_pages_are_never_limited(client, limited):
    for _ in range(5):
        assert client.get("/api/search", {"q": "cat"}).status_code in (200, 429)
    assert client.get("/").status_code == 200
    assert client.get("/healthz").status_code == 200
    assert client.get("/api/status").status_code == 200
    assert client.get(f"/items/{limited[0].id}/").status_code == 200


def test_each_client_address_has_its_own_limit(client, limited):
    for _ in range(4):
        client.get("/api/search", {"q": "cat"}, REMOTE_ADDR="192.0.2.1")
    assert client.get("/api/search", {"q": "cat"}, REMOTE_ADDR="192.0.2.1").status_code == 429
    assert client.get("/api/search", {"q": "cat"}, REMOTE_ADDR="192.0.2.2").status_code == 200


def test_addresses_in_one_ipv6_64_share_a_limit(client, limited):
    for host in range(1, 4):
        assert client.get("/api/search", {"q": "cat"}, REMOTE_ADDR=f"2001:db8::{host}").status_code == 200
    assert client.get("/api/search", {"q": "cat"}, REMOTE_ADDR="2001:db8::ff").status_code == 429
    assert client.get("/api/search", {"q": "cat"}, REMOTE_ADDR="2001:db8:0:1::1").status_code == 200


def test_behind_a_proxy_the_address_it_saw_counts_not_a_forged_one(client, settings, limited):
    settings.MEEPO_BEHIND_PROXY = True
    for forged in range(4):
        response = client.get(
            "/api/search", {"q": "cat"}, REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR=f"10.0.0.{forged}, 198.51.100.7"
        )
    assert response.status_code == 429
    other = client.get("/api/search", {"q": "cat"}, REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="198.51.100.8")
    assert other.status_code == 200


def test_the_limit_opens_again_in_the_next_window(client, settings, indexed_catalogue):
    settings.MEEPO_RATE_LIMIT = (1, 3)
    time.sleep(3 - time.time() % 3)  # start at the beginning of a window
    assert client.get("/api/search", {"q": "cat"}).status_code == 200
    refused = client.get("/api/search", {"q": "cat"})
    assert refused.status_code == 429
    time.sleep(int(refused["Retry-After"]))
    assert client.get("/api/search", {"q": "cat"}).status_code == 200


@pytest.fixture
def site_env() -> dict:
    return {"MEEPO_RATE_LIMIT": "5/hour"}


@pytest.mark.slow
def test_gunicorn_workers_share_one_count_per_client(site):  # noqa: F811
    base = site[0]
    statuses = [get(base + "/api/search?q=cat")[0] for _ in range(8)]
    assert statuses == [200] * 5 + [429] * 3
    status, body = get(base + "/api/search?q=cat")
    assert status == 429 and "error" in json.loads(body)
