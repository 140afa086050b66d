"""Every operation of the JSON API, walked with bad values (issue 5): each answers a 4xx with an
`error` that names the problem, never a 500, and leaves the catalogue as it was.

test_api.py has the cases a shopper meets most (a missing q, a damaged photo, a local URL); this
walk adds the hostile and the malformed, for every operation the OpenAPI schema lists.
"""

import json
from collections.abc import Callable
from typing import NamedTuple
from urllib.parse import urlencode

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile

from catalog.models import Item, ItemImage
from meepo.testing import DEMO_DIR
from pipeline.models import ImageVector

BEYOND_64_BITS = str(2**64)


class Bad(NamedTuple):
    what: str
    send: Callable
    status: int
    says: str  # a fragment of the error that names the problem


def photo() -> SimpleUploadedFile:
    """A 451×300 JPEG, as a shopper would upload it."""
    return SimpleUploadedFile("photo.jpg", (DEMO_DIR / "images" / "chelsea-cat.jpg").read_bytes(), "image/jpeg")


def search_text(**query):
    return lambda client: client.get("/api/search", {"q": "cat", **query})


def search_image(fields=None, **query):
    return lambda client: client.post(f"/api/search/image?{urlencode(query)}", {"image": photo(), **(fields or {})})


def search_url(body=None, content_type="application/json", **query):
    if body is None:
        body = {"url": "https://example.com/cat.jpg"}
    if not isinstance(body, str | bytes):
        body = json.dumps(body)
    return lambda client: client.post(f"/api/search/url?{urlencode(query)}", body, content_type=content_type)


def similar(item_id=None, **query):
    def send(client):
        return client.get(f"/api/items/{item_id or Item.objects.order_by('id').first().id}/similar", query)

    return send


def page_values(send) -> list[Bad]:
    """limit, offset and category are the same on every search."""
    return [
        Bad("limit 0", send(limit="0"), 400, "limit: Input should be greater than or equal to 1"),
        Bad("limit -1", send(limit="-1"), 400, "limit: Input should be greater than or equal to 1"),
        Bad("limit huge", send(limit=BEYOND_64_BITS), 400, "limit: Input should be less than or equal to 100"),
        Bad("limit not a number", send(limit="abc"), 400, "limit: Input should be a valid integer"),
        Bad("limit a fraction", send(limit="2.5"), 400, "limit: Input should be a valid integer"),
        Bad("offset -1", send(offset="-1"), 400, "offset: Input should be greater than or equal to 0"),
        Bad("offset huge", send(offset=BEYOND_64_BITS), 400, "offset: Input should be less than or equal to"),
        Bad("offset 1e99", send(offset="1e99"), 400, "offset: Input should be a valid integer"),
        Bad("unknown category", send(category="Spaceships"), 400, "there is no category 'Spaceships'"),
        Bad("category too long", send(category="x" * 101), 400, "category: String should have at most 100"),
        Bad("category with NUL", send(category="People\x00"), 400, "category: String should not contain NUL"),
    ]


def box_values(send) -> list[Bad]:
    malformed = "box must be four numbers"
    return [
        Bad("box of three numbers", send(box="1,2,3"), 400, malformed),
        Bad("box of letters", send(box="a,b,c,d"), 400, malformed),
        Bad("box with a gap", send(box="1,,2,3"), 400, malformed),
        Bad("box NaN", send(box="nan,nan,nan,nan"), 400, malformed),
        Bad("box inf", send(box="inf,0,100,100"), 400, malformed),
        Bad("box overflowing a float", send(box="1e400,0,100,100"), 400, malformed),
        Bad("box with NUL", send(box="0,0,100\x00,100"), 400, "box: String should not contain NUL"),
        Bad("box too long", send(box="1," * 40 + "1"), 400, "box: String should have at most 80"),
    ]


def method_values(path: str, allowed: str) -> list[Bad]:
    return [
        Bad(
            f"{method} instead of {allowed}",
            lambda client, method=method: client.generic(method, path),
            405,
            f"{method} is not allowed here; use {allowed}",
        )
        for method in ("GET", "POST", "PUT", "DELETE")
        if method not in allowed
    ]


def multipart(parts: bytes, boundary: str = "photo-boundary"):
    """A hand-made multipart body, to send what a browser never would."""
    body = parts + f"--{boundary}--\r\n".encode()
    content_type = f"multipart/form-data; boundary={boundary}"
    return lambda client: client.generic("POST", "/api/search/image", body, content_type=content_type)


def text_part(name: str, value: str, boundary: str = "photo-boundary") -> bytes:
    return f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()


def file_part(name: str, data: bytes, boundary: str = "photo-boundary") -> bytes:
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n'
    return head.encode() + b"Content-Type: image/jpeg\r\n\r\n" + data + b"\r\n"


BAD_VALUES = {
    "GET /api/search": [
        *page_values(search_text),
        Bad("q too long", search_text(q="é" * (settings.MEEPO_MAX_QUERY_LENGTH + 1)), 400, "q: String should have"),
        Bad("q of tabs, newlines and wide spaces", search_text(q="\t\n\u3000 "), 400, "q: the query is empty"),
        Bad("q of a NUL", search_text(q="\x00"), 400, "q: String should not contain NUL"),
        Bad("q with a NUL", search_text(q="red\x00dress"), 400, "q: String should not contain NUL"),
        Bad("regions not a boolean", search_text(regions="perhaps"), 400, "regions: Input should be a valid boolean"),
        *method_values("/api/search", "GET, HEAD"),
    ],
    "POST /api/search/image": [
        *page_values(search_image),
        *box_values(lambda **fields: search_image(fields)),
        Bad("box outside the photo", search_image({"box": "400,250,100,100"}), 400, "inside the photo (451×300"),
        Bad("box at negative x", search_image({"box": "-10,0,100,100"}), 400, "inside the photo"),
        Bad("box of huge numbers", search_image({"box": f"{BEYOND_64_BITS},0,100,100"}), 400, "inside the photo"),
        Bad("box smaller than 16 px", search_image({"box": "0,0,15,100"}), 400, "at least 16 pixels"),
        Bad("box with negative sides", search_image({"box": "100,100,-50,-50"}), 400, "at least 16 pixels"),
        Bad("mode unknown", search_image({"mode": "everything"}), 400, "mode: Input should be 'full', 'region'"),
        Bad("remove_text not a boolean", search_image({"remove_text": "perhaps"}), 400, "remove_text: Input should"),
        Bad(
            "image as a text field",
            lambda client: client.post("/api/search/image", {"image": "cat.jpg"}),
            400,
            "image: Field required",
        ),
        Bad(
            "JSON instead of a form",
            lambda client: client.post("/api/search/image", {"image": "x"}, content_type="application/json"),
            400,
            "image: Field required",
        ),
        Bad(
            "multipart without a boundary",
            lambda client: client.generic("POST", "/api/search/image", b"x", content_type="multipart/form-data"),
            400,
            "cannot be read as multipart/form-data: Invalid boundary",
        ),
        Bad(
            "a file name of 5000 characters",
            multipart(file_part("a" * 5000 + ".jpg", photo().read())),
            400,
            "cannot be read as multipart/form-data: Request max total header size exceeded",
        ),
        Bad(
            "more form fields than Django reads",
            multipart(b"".join(text_part(f"field{n}", "x") for n in range(1001))),
            400,
            "malformed or too large",
        ),
        *method_values("/api/search/image", "POST"),
    ],
    "POST /api/search/url": [
        *page_values(search_url),
        *box_values(lambda **fields: search_url({"url": "https://example.com/cat.jpg", **fields})),
        Bad("mode unknown", search_url({"url": "https://example.com/a.jpg", "mode": "x"}), 400, "mode: Input should"),
        Bad("box a number", search_url({"url": "https://example.com/a.jpg", "box": 5}), 400, "box: Input should be"),
        Bad("url not a URL", search_url({"url": "a cat, please"}), 400, "Only http:// and https:// URLs"),
        Bad("url javascript:", search_url({"url": "javascript:alert(1)"}), 400, "Only http:// and https:// URLs"),
        Bad("url without a host", search_url({"url": "http://"}), 400, "The URL has no host"),
        Bad("url with a broken IPv6 host", search_url({"url": "http://[::1/cat.jpg"}), 400, "The URL is not valid"),
        Bad("url with port 99999", search_url({"url": "http://example.com:99999/"}), 400, "The URL is not valid"),
        Bad("url with NUL", search_url({"url": "http://exa\x00mple.com/"}), 400, "url: String should not contain NUL"),
        Bad("url too long", search_url({"url": "https://a.example/" + "a" * 2000}), 400, "url: String should have"),
        Bad("url a number", search_url({"url": 42}), 400, "url: Input should be a valid string"),
        Bad("url null", search_url({"url": None}), 400, "url: Input should be a valid string"),
        Bad("body a JSON list", search_url([]), 400, "url: Field required"),
        Bad(
            "body empty",
            # Django's test client leaves out the Content-Type of an empty body; curl -d '' sends it.
            lambda client: client.generic("POST", "/api/search/url", b"", CONTENT_TYPE="application/json"),
            400,
            "body: Field required",
        ),
        Bad("body empty without a Content-Type", search_url(""), 415, "Send the body as JSON"),
        Bad("body cut short", search_url('{"url": "https:'), 400, "Cannot parse request body"),
        Bad("body not UTF-8", search_url(b"\xff\xfe{}"), 400, "Cannot parse request body"),
        Bad("body nested too deep", search_url("[" * 100_000), 400, "Cannot parse request body"),
        Bad(
            "JSON sent as text/plain",
            search_url('{"url": "https://example.com/cat.jpg"}', content_type="text/plain"),
            415,
            "application/json",
        ),
        Bad(
            "a form instead of JSON",
            search_url("url=https://example.com/cat.jpg", content_type="application/x-www-form-urlencoded"),
            415,
            "Send the body as JSON",
        ),
        Bad(
            "multipart instead of JSON",
            lambda client: client.post("/api/search/url", {"url": "https://example.com/cat.jpg"}),
            415,
            "Send the body as JSON",
        ),
        Bad(
            "a JSON body larger than Django reads",
            search_url({"url": "https://example.com/cat.jpg", "box": "x" * 3_000_000}),
            400,
            "malformed or too large",
        ),
        *method_values("/api/search/url", "POST"),
    ],
    "GET /api/items/{item_id}/similar": [
        *page_values(similar),
        Bad("item id not a number", similar("abc"), 400, "item_id: Input should be a valid integer"),
        Bad("item id a fraction", similar("1.5"), 400, "item_id: Input should be a valid integer"),
        Bad("item id negative", similar("-1"), 400, "item_id: Input should be greater than or equal to 1"),
        Bad("item id zero", similar("0"), 400, "item_id: Input should be greater than or equal to 1"),
        Bad("item id beyond 64 bits", similar(BEYOND_64_BITS), 400, "item_id: Input should be less than or equal"),
        Bad("item id of 5000 digits", similar("9" * 5000), 400, "item_id: Unable to parse input string"),
        *method_values("/api/items/1/similar", "GET, HEAD"),
    ],
    # Status takes no input at all.
    "GET /api/status": method_values("/api/status", "GET, HEAD"),
}


def catalogue_rows() -> tuple[int, int, int]:
    return Item.objects.count(), ItemImage.objects.count(), ImageVector.objects.count()


def test_the_walk_covers_every_operation_in_the_schema(client):
    schema = client.get("/api/openapi.json").json()

    operations = {f"{method.upper()} {path}" for path, methods in schema["paths"].items() for method in methods}

    assert operations == set(BAD_VALUES)


@pytest.mark.parametrize("operation", list(BAD_VALUES))
def test_every_bad_value_gets_a_4xx_with_an_error_and_changes_nothing(client, indexed_catalogue, subtests, operation):
    # One catalogue per operation, not per value: building it is most of the time.
    for bad in BAD_VALUES[operation]:
        with subtests.test(bad.what):
            before = catalogue_rows()

            response = bad.send(client)

            assert response.status_code == bad.status, response.content[:300]
            assert response["Content-Type"].startswith("application/json")
            assert bad.says in response.json()["error"]
            assert catalogue_rows() == before


def test_an_unknown_api_path_is_a_json_404(client, db):
    response = client.get("/api/nothing-here")

    assert response.status_code == 404
    assert response.json() == {"error": "There is no API endpoint /api/nothing-here."}
