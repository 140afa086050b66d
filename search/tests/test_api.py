import http.server
import io
import threading
from pathlib import Path

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from catalog.models import Item, ItemImage
from meepo.testing import DEMO_DIR

RESULT_KEYS = {"item_id", "title", "score", "url", "image_url", "thumbnail_url", "category", "price"}


def photo_of(item: Item) -> bytes:
    return item.images.first().read_bytes()


def upload(data: bytes, name: str = "photo.jpg", content_type: str = "image/jpeg") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data, content_type=content_type)


def test_text_search_answers_the_documented_shape(client, indexed_catalogue):
    response = client.get("/api/search", {"q": "an astronaut in an orange suit", "limit": 5})

    assert response.status_code == 200
    body = response.json()
    assert set(body) >= {"results", "total", "limit", "offset", "processing_time_ms", "model"}
    assert body["model"] == {"name": "meepo-tiny", "trained": False}
    assert (body["total"], body["limit"], body["offset"]) == (8, 5, 0)
    assert len(body["results"]) == 5
    assert all(set(result) >= RESULT_KEYS for result in body["results"])
    scores = [result["score"] for result in body["results"]]
    assert scores == sorted(scores, reverse=True)
    assert body["results"][0]["url"].startswith("http://testserver/items/")


def test_pages_of_results_follow_each_other_without_repeats(client, indexed_catalogue):
    first = client.get("/api/search", {"q": "cat", "limit": 4}).json()["results"]
    second = client.get("/api/search", {"q": "cat", "limit": 4, "offset": 4}).json()["results"]
    everything = client.get("/api/search", {"q": "cat", "limit": 8}).json()["results"]

    assert [r["item_id"] for r in first + second] == [r["item_id"] for r in everything]
    assert len({r["item_id"] for r in everything}) == 8


def test_category_narrows_the_results(client, indexed_catalogue):
    body = client.get("/api/search", {"q": "photo", "category": "People"}).json()

    assert body["total"] == 3
    assert {result["category"] for result in body["results"]} == {"People"}


def test_searching_with_a_catalogue_photo_finds_that_item_first(client, indexed_catalogue):
    item = indexed_catalogue[3]

    response = client.post("/api/search/image", {"image": upload(photo_of(item))})

    assert response.status_code == 200
    top = response.json()["results"][0]
    assert top["item_id"] == item.id and top["score"] >= 0.99


def test_a_png_with_transparency_is_accepted(client, indexed_catalogue):
    buffer = io.BytesIO()
    Image.new("RGBA", (64, 48), (255, 0, 0, 128)).save(buffer, format="PNG")

    response = client.post("/api/search/image", {"image": upload(buffer.getvalue(), "x.png", "image/png")})

    assert response.status_code == 200 and len(response.json()["results"]) == 8


def test_hidden_items_are_never_returned(client, indexed_catalogue):
    item = indexed_catalogue[3]
    Item.objects.filter(id=item.id).update(active=False)

    body = client.post("/api/search/image", {"image": upload(photo_of(item))}).json()

    assert item.id not in [result["item_id"] for result in body["results"]]
    assert body["total"] == 7
    assert client.get(f"/api/items/{item.id}/similar").status_code == 404


def test_similar_items_leave_out_the_item_itself(client, indexed_catalogue):
    item = indexed_catalogue[0]

    body = client.get(f"/api/items/{item.id}/similar", {"limit": 10}).json()

    ids = [result["item_id"] for result in body["results"]]
    assert item.id not in ids and len(ids) == 7


def test_similar_items_keep_to_the_category_asked_for(client, indexed_catalogue):
    item = indexed_catalogue[0]
    category = indexed_catalogue[1].category

    body = client.get(f"/api/items/{item.id}/similar", {"limit": 10, "category": category}).json()

    expected = {other.id for other in indexed_catalogue if other.category == category and other.id != item.id}
    assert {result["item_id"] for result in body["results"]} == expected
    assert {result["category"] for result in body["results"]} == {category}


def test_a_query_of_invisible_characters_is_empty(client, indexed_catalogue):
    response = client.get("/api/search", {"q": "\u200b\u200b \ufeff"})

    assert response.status_code == 400 and "empty" in response.json()["error"]


def test_similar_for_an_unknown_item_is_404(client, indexed_catalogue):
    response = client.get("/api/items/999999/similar")

    assert response.status_code == 404 and "no item 999999" in response.json()["error"]


@pytest.fixture
def photo_server():
    """A local web server with one demo photo and one HTML page."""
    photo = (DEMO_DIR / "images" / "chelsea-cat.jpg").read_bytes()
    requested = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            requested.append(self.path)
            if self.path == "/cat.jpg":
                body, kind = photo, "image/jpeg"
            elif self.path == "/moved":
                self.send_response(302)
                self.send_header("Location", "/cat.jpg")
                self.end_headers()
                return
            else:
                body, kind = b"<html>hello</html>", "text/html"
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", requested
    server.shutdown()


def test_searching_with_a_photo_url_finds_that_item(client, settings, indexed_catalogue, photo_server):
    settings.MEEPO_FETCH_ALLOW_PRIVATE = True
    base, _ = photo_server
    cat = Item.objects.get(sku="DEMO-004")

    response = client.post("/api/search/url", {"url": f"{base}/moved"}, content_type="application/json")

    assert response.status_code == 200
    assert response.json()["results"][0]["item_id"] == cat.id


def test_a_photo_url_on_a_local_address_is_refused_without_being_requested(client, indexed_catalogue, photo_server):
    base, requested = photo_server

    response = client.post("/api/search/url", {"url": f"{base}/cat.jpg"}, content_type="application/json")

    assert response.status_code == 400
    assert "private or local addresses" in response.json()["error"]
    assert requested == []


def test_a_url_with_non_ascii_characters_is_fetched_not_crashed_on(client, settings, indexed_catalogue, photo_server):
    settings.MEEPO_FETCH_ALLOW_PRIVATE = True
    base, requested = photo_server

    response = client.post("/api/search/url", {"url": f"{base}/café.jpg"}, content_type="application/json")

    assert response.status_code == 400 and requested == ["/caf%C3%A9.jpg"]


def test_a_url_that_gives_a_web_page_is_refused(client, settings, indexed_catalogue, photo_server):
    settings.MEEPO_FETCH_ALLOW_PRIVATE = True
    base, _ = photo_server

    response = client.post("/api/search/url", {"url": f"{base}/page"}, content_type="application/json")

    assert response.status_code == 400 and "text/html, not an image" in response.json()["error"]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, "q: Field required"),
        ({"q": ""}, "q: String should have at least 1 character"),
        ({"q": "   "}, "q: the query is empty."),
        ({"q": "x" * 301}, "q: String should have at most 300 characters"),
        ({"q": "cat", "limit": 0}, "limit: Input should be greater than or equal to 1"),
        ({"q": "cat", "limit": 101}, "limit: Input should be less than or equal to 100"),
        ({"q": "cat", "limit": "ten"}, "limit: Input should be a valid integer"),
        ({"q": "cat", "offset": -1}, "offset: Input should be greater than or equal to 0"),
    ],
)
def test_bad_text_queries_get_a_400_with_a_clear_error(client, indexed_catalogue, params, message):
    response = client.get("/api/search", params)

    assert response.status_code == 400
    assert response.json()["error"].startswith(message)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "The file is empty."),
        (b"%PDF-1.4 not an image", "not an image in a supported format"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "not an image in a supported format"),
        ((DEMO_DIR / "images" / "raccoon.jpg").read_bytes()[:3000], "damaged"),
    ],
)
def test_bad_photos_get_a_400_with_a_clear_error(client, indexed_catalogue, data, message):
    before = ItemImage.objects.count()

    response = client.post("/api/search/image", {"image": upload(data)})

    assert response.status_code == 400
    assert message in response.json()["error"]
    assert ItemImage.objects.count() == before


def test_an_upload_without_the_image_field_is_a_400(client, indexed_catalogue):
    response = client.post("/api/search/image", {"picture": upload(b"x")})

    assert response.status_code == 400 and "image: Field required" in response.json()["error"]


def test_an_oversized_upload_is_refused_before_it_is_read(client, settings, indexed_catalogue):
    settings.MEEPO_MAX_UPLOAD_BYTES = 2048

    response = client.post("/api/search/image", {"image": upload(b"\xff" * 200_000)})

    assert response.status_code == 413 and "larger than" in response.json()["error"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"url": "ftp://example.com/cat.jpg"}, "Only http:// and https:// URLs"),
        ({"url": "file:///etc/passwd"}, "Only http:// and https:// URLs"),
        ({"url": "http://user:pw@example.com/x.jpg"}, "user name or password"),
        ({"url": ""}, "url: String should have at least 1 character"),
        ({}, "url: Field required"),
    ],
)
def test_bad_photo_urls_get_a_400(client, indexed_catalogue, body, message):
    response = client.post("/api/search/url", body, content_type="application/json")

    assert response.status_code == 400 and message in response.json()["error"]


def test_malformed_json_is_a_400(client, indexed_catalogue):
    response = client.post("/api/search/url", "{not json", content_type="application/json")

    assert response.status_code == 400 and "error" in response.json()


def test_search_before_any_index_says_what_to_run(client, small_catalogue):
    response = client.get("/api/search", {"q": "cat"})

    assert response.status_code == 503
    assert "python manage.py embed_catalog" in response.json()["error"]


def test_status_reports_counts_model_and_index(client, indexed_catalogue):
    ItemImage.objects.filter(id=indexed_catalogue[0].images.first().id).update(embedding_state="failed")

    body = client.get("/api/status").json()

    assert body["counts"] == {"items": 8, "active_items": 8, "images": 8, "embedded": 7, "pending": 0, "failed": 1}
    assert body["model"]["name"] == "meepo-tiny" and body["model"]["trained"] is False
    assert body["model"]["dimension"] == 64
    assert body["index"]["type"] == "flat" and body["index"]["vectors"] == 8 and body["index"]["matches_model"]


def test_healthz_says_ok(client, indexed_catalogue):
    response = client.get("/healthz")

    assert response.status_code == 200 and response.json() == {"status": "ok", "index": True}


def test_the_openapi_schema_documents_every_endpoint(client, db):
    schema = client.get("/api/openapi.json").json()

    assert {
        "/api/search",
        "/api/search/image",
        "/api/search/url",
        "/api/items/{item_id}/similar",
        "/api/status",
    } <= set(schema["paths"])


def test_query_photos_never_touch_the_disk(client, settings, indexed_catalogue, tmp_path):
    # Django spills uploads over 2.5 MB to a temporary file; there is none to spill to here.
    settings.FILE_UPLOAD_TEMP_DIR = tmp_path / "does-not-exist"
    noise = np.random.default_rng(0).integers(0, 256, (1800, 1800, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format="JPEG", quality=95)
    big = buffer.getvalue()
    assert 3_000_000 < len(big) < settings.MEEPO_MAX_UPLOAD_BYTES
    media_before = sorted(Path(settings.MEDIA_ROOT).rglob("*"))

    found = client.post("/api/search/image", {"image": SimpleUploadedFile("big.jpg", big, "image/jpeg")})
    refused = client.post("/api/search/image", {"image": SimpleUploadedFile("big.jpg", big[:-1_000_000], "image/jpeg")})

    assert found.status_code == 200 and refused.status_code == 400
    assert sorted(Path(settings.MEDIA_ROOT).rglob("*")) == media_before


@pytest.fixture
def index_of_another_model(settings, indexed_catalogue):
    """The served index was built with meepo-tiny; the site is now configured for ViT-B-32."""
    settings.MEEPO_CLIP_MODEL, settings.MEEPO_CLIP_PRETRAINED = "ViT-B-32", "openai"
    return indexed_catalogue


def test_similar_items_from_an_index_of_another_model_are_a_503_like_every_search(client, index_of_another_model):
    item = index_of_another_model[0]

    similar = client.get(f"/api/items/{item.id}/similar")
    text = client.get("/api/search", {"q": "cat"})

    assert (similar.status_code, text.status_code) == (503, 503)
    assert similar.json() == text.json()
    assert "built with meepo-tiny:untrained, but Meepo is configured for ViT-B-32:openai" in similar.json()["error"]


def test_healthz_reports_an_index_of_another_model(client, index_of_another_model):
    response = client.get("/healthz")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["index"] is False
    assert "configured for ViT-B-32" in body["index_error"] and "embed_catalog" in body["index_error"]


def test_healthz_before_any_index_says_what_to_run(client, small_catalogue):
    body = client.get("/healthz").json()

    assert body["index"] is False and "python manage.py embed_catalog" in body["index_error"]


def test_head_answers_wherever_get_does_without_a_body(client, indexed_catalogue):
    item = indexed_catalogue[0]
    paths = ["/healthz", "/", "/search?q=cat", item.get_absolute_url()]
    paths += ["/api/search?q=cat", f"/api/items/{item.id}/similar", "/api/status"]

    for path in paths:
        got, head = client.get(path), client.head(path)

        assert head.status_code == 200, path
        assert head["Content-Type"] == got["Content-Type"], path
        assert head.content == b"", path


def test_head_stays_out_of_the_schema(client, db):
    schema = client.get("/api/openapi.json").json()

    assert {method for methods in schema["paths"].values() for method in methods} == {"get", "post"}


def test_a_wrong_method_lists_head_beside_get(client, db):
    response = client.post("/api/status")

    assert response.status_code == 405 and response["Allow"] == "GET, HEAD"
    assert response.json() == {"error": "POST is not allowed here; use GET, HEAD."}


@pytest.mark.parametrize("option", ["remove_text", "enhance"])
def test_clean_up_options_on_a_big_photo_still_find_its_item(client, indexed_catalogue, option):
    item = indexed_catalogue[3]
    photo = Image.open(io.BytesIO(photo_of(item)))
    buffer = io.BytesIO()
    photo.resize((photo.width * 8, photo.height * 8)).save(buffer, format="JPEG", quality=90)

    response = client.post("/api/search/image", {"image": upload(buffer.getvalue()), option: "true"})

    assert response.status_code == 200
    assert response.json()["results"][0]["item_id"] == item.id
