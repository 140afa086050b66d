"""What browsers and proxies may keep: API answers never; catalogue images and thumbnails, named by
the hash of their bytes, for a year (when Django serves /media/ itself)."""

from pathlib import Path

from django.core.files.uploadedfile import SimpleUploadedFile

from meepo.testing import DEMO_DIR

A_YEAR = "public, max-age=31536000, immutable"


def photo() -> SimpleUploadedFile:
    return SimpleUploadedFile("photo.jpg", (DEMO_DIR / "images" / "chelsea-cat.jpg").read_bytes(), "image/jpeg")


def test_api_answers_are_never_stored(client, indexed_catalogue):
    answers = {
        "text search": client.get("/api/search", {"q": "cat"}),
        "photo search": client.post("/api/search/image", {"image": photo()}),
        "similar items": client.get(f"/api/items/{indexed_catalogue[0].id}/similar"),
        "status": client.get("/api/status"),
        "a bad value": client.get("/api/search", {"q": ""}),
        "an unknown path": client.get("/api/nothing-here"),
    }

    assert {what: answer["Cache-Control"] for what, answer in answers.items()} == dict.fromkeys(answers, "no-store")


def test_uploads_refused_before_the_api_are_never_stored_either(client, settings, indexed_catalogue):
    settings.MEEPO_MAX_UPLOAD_BYTES = 2048

    big = SimpleUploadedFile("big.jpg", b"\xff" * 200_000, "image/jpeg")

    response = client.post("/api/search/image", {"image": big})

    assert response.status_code == 413 and response["Cache-Control"] == "no-store"


def test_shopper_pages_are_left_as_they_were(client, indexed_catalogue):
    assert not client.get("/search", {"q": "cat"}).has_header("Cache-Control")


def test_catalogue_images_and_thumbnails_are_kept_for_a_year(client, indexed_catalogue):
    image = indexed_catalogue[0].images.first()

    answers = [client.get(image.image_url), client.get(image.thumbnail_url)]

    assert [answer.status_code for answer in answers] == [200, 200]
    assert [answer["Cache-Control"] for answer in answers] == [A_YEAR, A_YEAR]


def test_a_media_file_not_named_by_its_content_is_not_kept(client, settings, data_dir):
    path = Path(settings.MEDIA_ROOT) / "catalog" / "photo.jpg"
    path.parent.mkdir(parents=True)
    path.write_bytes((DEMO_DIR / "images" / "chelsea-cat.jpg").read_bytes())

    response = client.get("/media/catalog/photo.jpg")

    assert response.status_code == 200 and not response.has_header("Cache-Control")
