import io

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from catalog.images import load_rgb
from pipeline.embedding import embed_catalog
from pipeline.models import WindowVectors
from pipeline.window_embedding import configured_layout
from pipeline.windows import intersection_over_union, windows
from search.regions import aggregate_windows, full_matches, merge


def png(image) -> SimpleUploadedFile:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return SimpleUploadedFile("crop.png", buffer.getvalue(), content_type="image/png")


def window_crop(item, number: int):
    image = item.images.first()
    pixels = load_rgb(image.read_bytes(), max_pixels=10**9)
    box = windows(pixels.width, pixels.height, configured_layout())[number]
    x, y, w, h = box
    return pixels, box, pixels.crop((x, y, x + w, y + h))


@pytest.mark.parametrize("mode", ["region", "both"])
@pytest.mark.parametrize(("position", "window"), [(3, 0), (5, 4), (1, 11)])
def test_a_crop_aligned_to_a_window_finds_its_item_first_with_the_box(
    client, indexed_catalogue, mode, position, window
):
    item = indexed_catalogue[position]
    _, box, crop = window_crop(item, window)

    body = client.post("/api/search/image?limit=5", {"image": png(crop), "mode": mode}).json()

    top = body["results"][0]
    assert top["item_id"] == item.id
    assert top["match"] == "region"
    assert intersection_over_union(tuple(top["box"]), box) >= 0.5
    image = item.images.first()
    assert (top["width"], top["height"]) == (image.width, image.height)


@pytest.mark.parametrize("weights", [(1.0, 0.0, 0.0), (0.7, 0.3, 0.05)])
def test_scores_stay_in_a_cosines_range(client, settings, indexed_catalogue, weights):
    settings.MEEPO_REGION_WEIGHTS = weights
    scores = []
    # Crops whose windows' 8-bit codes scored 1.0007 to 1.0012 against them.
    for position, window in [(3, 0), (5, 4), (6, 1)]:
        _, _, crop = window_crop(indexed_catalogue[position], window)
        body = client.post("/api/search/image", {"image": png(crop), "mode": "both"}).json()
        scores += [result["score"] for result in body["results"]]

    assert scores and all(-1.0 <= score <= 1.0 for score in scores)


def test_a_quantised_region_score_never_outranks_an_exact_whole_image_match():
    exact = full_matches(np.array([1]), np.array([1.0], dtype=np.float32))
    quantised = aggregate_windows(
        np.array([2]), np.array([[0, 0, 64, 64]]), np.array([1.0007], dtype=np.float32), {2: 4}, weights=(1, 0, 0)
    )

    merged = merge(exact, quantised)

    assert [(match.image_id, match.match, match.score) for match in merged] == [(1, "full", 1.0), (2, "region", 1.0)]


def test_a_box_drawn_on_the_whole_photo_searches_that_region(client, indexed_catalogue):
    item = indexed_catalogue[5]
    pixels, box, _ = window_crop(item, 6)

    body = client.post(
        "/api/search/image", {"image": png(pixels), "mode": "region", "box": ",".join(map(str, box))}
    ).json()

    assert body["results"][0]["item_id"] == item.id
    assert intersection_over_union(tuple(body["results"][0]["box"]), box) >= 0.5


def test_full_mode_never_returns_region_matches(client, indexed_catalogue):
    _, _, crop = window_crop(indexed_catalogue[3], 0)

    body = client.post("/api/search/image", {"image": png(crop), "mode": "full"}).json()

    assert body["results"] and {result["match"] for result in body["results"]} == {"full"}
    assert all(result["box"] is None for result in body["results"])


def test_the_whole_photo_still_matches_as_a_full_image(client, indexed_catalogue):
    item = indexed_catalogue[2]

    whole = load_rgb(item.images.first().read_bytes(), max_pixels=10**9)

    body = client.post("/api/search/image", {"image": png(whole)}).json()

    assert body["results"][0]["item_id"] == item.id and body["results"][0]["match"] == "full"


def test_text_matches_regions_only_when_asked(client, indexed_catalogue):
    plain = client.get("/api/search", {"q": "a red mug", "limit": 8}).json()
    with_regions = client.get("/api/search", {"q": "a red mug", "limit": 8, "regions": "true"}).json()

    assert {result["match"] for result in plain["results"]} == {"full"}
    assert with_regions["total"] == 8
    assert all(result["match"] in ("full", "region") for result in with_regions["results"])


@pytest.mark.parametrize(
    ("box", "message"),
    [
        ("0,0,10,40", "at least 16 pixels on each side"),
        ("0,0,16,900", "at most 50 times as long as it is wide"),
        ("-1,0,40,40", "must lie inside the photo"),
        ("5000,0,40,40", "must lie inside the photo"),
        ("1,2,3", "box must be four numbers"),
        ("a,b,c,d", "box must be four numbers"),
        ("inf,0,40,40", "box must be four numbers"),
    ],
)
def test_bad_boxes_get_a_400(client, indexed_catalogue, box, message):
    photo = indexed_catalogue[0].images.first().read_bytes()

    response = client.post("/api/search/image", {"image": SimpleUploadedFile("p.jpg", photo, "image/jpeg"), "box": box})

    assert response.status_code == 400 and message in response.json()["error"]


def test_an_unknown_mode_is_a_400(client, indexed_catalogue):
    photo = indexed_catalogue[0].images.first().read_bytes()

    response = client.post(
        "/api/search/image", {"image": SimpleUploadedFile("p.jpg", photo, "image/jpeg"), "mode": "sideways"}
    )

    assert response.status_code == 400 and response.json()["error"].startswith("mode:")


def test_a_photo_url_search_takes_a_box_too(client, indexed_catalogue):
    response = client.post(
        "/api/search/url",
        {"url": "https://example.com/x.jpg", "box": "0,0,8,8", "mode": "region"},
        content_type="application/json",
    )

    # The box is checked before anything is fetched.
    assert response.status_code == 400


def test_hidden_items_never_match_through_regions(client, indexed_catalogue):
    item = indexed_catalogue[3]
    _, _, crop = window_crop(item, 0)
    item.active = False
    item.save()

    body = client.post("/api/search/image", {"image": png(crop), "mode": "region"}).json()

    assert item.id not in [result["item_id"] for result in body["results"]]


def test_status_reports_the_windows_index(client, indexed_catalogue):
    windows_status = client.get("/api/status").json()["index"]["windows"]

    assert windows_status["images"] == 8
    assert windows_status["vectors"] == sum(
        len(windows(item.images.first().width, item.images.first().height, configured_layout()))
        for item in indexed_catalogue
    )
    assert 0 < windows_status["bytes_per_vector"] < 64 * 4


def test_a_changed_window_setting_re_embeds_windows_only(settings, indexed_catalogue):
    settings.MEEPO_WINDOWS = "relative:0.5:0.25"

    report = embed_catalog()

    assert (report.encoded, report.windows) == (0, 8)
    assert set(WindowVectors.objects.values_list("layout", flat=True)) == {configured_layout().key}


def test_no_windows_skips_them(small_catalogue):
    report = embed_catalog(windows=False)

    assert report.encoded == 8 and report.windows == 0
    assert not WindowVectors.objects.exists()
