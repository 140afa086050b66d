"""The shopper's pages, rendered by the real views against a real catalogue and index."""

from html.parser import HTMLParser
from pathlib import Path

import pytest
from django.contrib.staticfiles import finders
from django.core.files.uploadedfile import SimpleUploadedFile
from django.template import loader
from django.urls import reverse

from catalog.models import Item, ItemImage
from meepo.testing import DEMO_DIR
from pipeline.window_embedding import configured_layout
from pipeline.windows import windows

CAT_PHOTO = DEMO_DIR / "images" / "chelsea-cat.jpg"


class _Elements(HTMLParser):
    def __init__(self):
        super().__init__()
        self.found: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag, attrs):
        self.found.append((tag, dict(attrs)))


def elements(response, tag: str, **wanted: str | None) -> list[dict[str, str | None]]:
    """Attributes of each `tag` element whose attributes include `wanted` (data_x means data-x;
    None means present with any value)."""
    parser = _Elements()
    parser.feed(response.content.decode())
    wanted = {name.replace("_", "-"): value for name, value in wanted.items()}
    return [
        attrs
        for found_tag, attrs in parser.found
        if found_tag == tag
        and all(name in attrs and (value is None or attrs[name] == value) for name, value in wanted.items())
    ]


def card_ids(response) -> list[int]:
    """Item ids of the result cards, in page order."""
    return [int(attrs["data-item-id"]) for attrs in elements(response, "a", data_result_card=None)]


def text(response) -> str:
    return response.content.decode()


def files_under(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*") if path.is_file()) if folder.exists() else []


def a_window(image: ItemImage, number: int) -> str:
    """One of the windows the index holds for `image`, as the box field writes it."""
    return ",".join(map(str, windows(image.width, image.height, configured_layout())[number]))


def photo_upload(item: Item) -> SimpleUploadedFile:
    return SimpleUploadedFile("photo.jpg", item.images.first().read_bytes(), content_type="image/jpeg")


def test_home_offers_a_text_search_that_works_without_javascript(client, small_catalogue):
    response = client.get("/")

    assert response.status_code == 200
    (search_form,) = elements(response, "form", role="search")
    assert search_form["action"] == reverse("search:results")
    assert search_form.get("method") == "get"
    assert elements(response, "input", name="q", type="search")


def test_home_offers_a_photo_search_form_with_file_and_url_fields(client, small_catalogue):
    response = client.get("/")

    (photo_form,) = elements(response, "form", data_photo_form=None)
    assert photo_form["action"] == reverse("search:photo")
    assert photo_form["method"] == "post"
    assert photo_form["enctype"] == "multipart/form-data"
    assert elements(response, "input", name="csrfmiddlewaretoken")
    assert elements(response, "input", name="image", type="file")
    assert elements(response, "input", name="url")
    assert elements(response, "label", **{"for": "photo-image"})
    assert elements(response, "script", src="/static/js/meepo.js")


def test_the_photo_form_has_a_box_field_a_mode_and_the_clean_up_options(client, small_catalogue):
    response = client.get("/")

    assert elements(response, "input", type="hidden", name="box", value="")
    assert elements(response, "select", name="mode")
    assert elements(response, "option", value="both", selected=None)
    assert elements(response, "option", value="full") and elements(response, "option", value="region")
    assert elements(response, "input", type="checkbox", name="remove_text")
    assert elements(response, "input", type="checkbox", name="enhance")
    (region_button,) = elements(response, "button", data_region_submit=None)
    assert "disabled" in region_button and "hidden" in region_button


def test_home_lists_the_latest_items_with_links_and_prices(client, small_catalogue):
    response = client.get("/")

    assert sorted(card_ids(response)) == sorted(item.id for item in small_catalogue)
    cat = next(item for item in small_catalogue if item.title == "Tabby cat print")
    assert elements(response, "a", href=cat.get_absolute_url(), data_result_card=None)
    # The title names the card's link; its photo would only say the same again.
    assert ">Tabby cat print</h3>" in text(response)
    assert not elements(response, "img", alt="Tabby cat print")
    assert f"{cat.price} {cat.currency}" in text(response)
    assert "data-empty-catalogue" not in text(response)


def test_home_has_a_chip_for_each_category(client, small_catalogue):
    response = client.get("/")

    assert elements(response, "a", href="/search?q=Animals&category=Animals")
    assert elements(response, "a", href="/search?q=People&category=People")


def test_an_empty_catalogue_tells_the_admin_which_commands_to_run(client, db, data_dir):
    response = client.get("/")

    assert response.status_code == 200
    assert card_ids(response) == []
    assert "The catalogue is empty" in text(response)
    assert "python manage.py import_catalog" in text(response)
    assert "python manage.py embed_catalog" in text(response)


def test_every_page_warns_that_the_untrained_model_gives_meaningless_results(client, small_catalogue):
    response = client.get("/")

    # In a landmark of its own, so that a screen reader's landmark list reaches it.
    assert len(elements(response, "div", data_untrained_banner=None, role="region", aria_label="Demo model")) == 1
    assert "untrained demo model (<strong>meepo-tiny</strong>)" in text(response)
    assert "not meaningful" in text(response)


def test_a_trained_model_shows_no_warning(client, small_catalogue, settings):
    settings.MEEPO_CLIP_MODEL, settings.MEEPO_CLIP_PRETRAINED = "ViT-B-32", "openai"

    response = client.get("/")

    assert response.status_code == 200
    assert not elements(response, "div", data_untrained_banner=None)


def test_a_text_search_shows_a_card_for_every_item_without_its_score(client, indexed_catalogue):
    response = client.get("/search", {"q": "a cat"})

    assert response.status_code == 200
    assert sorted(card_ids(response)) == sorted(item.id for item in indexed_catalogue)
    assert "8 items" in text(response)
    # A cosine similarity means nothing to a shopper, and the tiny model's are often below zero.
    assert "score" not in text(response).lower()
    assert elements(response, "input", name="q", value="a cat")
    assert elements(response, "div", data_untrained_banner=None)


def test_a_text_search_in_a_category_shows_only_that_category(client, indexed_catalogue):
    response = client.get("/search", {"q": "portrait", "category": "People"})

    people = {item.id for item in indexed_catalogue if item.category == "People"}
    assert set(card_ids(response)) == people
    assert elements(response, "option", value="People", selected=None)


def test_results_are_paginated_with_links_that_keep_the_query_and_category(client, indexed_catalogue, settings):
    settings.MEEPO_PAGE_SIZE = 2

    first = client.get("/search", {"q": "animal", "category": "Animals"})
    second = client.get("/search", {"q": "animal", "category": "Animals", "page": 2})
    last = client.get("/search", {"q": "animal", "category": "Animals", "page": 3})

    assert [len(card_ids(page)) for page in (first, second, last)] == [2, 2, 1]
    seen = card_ids(first) + card_ids(second) + card_ids(last)
    assert sorted(seen) == sorted(item.id for item in indexed_catalogue if item.category == "Animals")
    assert elements(first, "a", href="?q=animal&category=Animals&page=2", rel="next")
    assert elements(second, "a", href="?q=animal&category=Animals&page=1", rel="prev")
    assert elements(second, "a", href="?q=animal&category=Animals&page=2", aria_current="page")
    assert elements(second, "a", href="?q=animal&category=Animals&page=3", rel="next")
    assert not elements(last, "a", rel="next")


def test_a_single_page_of_results_has_no_pagination(client, indexed_catalogue):
    response = client.get("/search", {"q": "cat"})

    assert not elements(response, "nav", data_pagination=None)


def test_a_search_that_matches_nothing_says_so(client, indexed_catalogue):
    response = client.get("/search", {"q": "teapot", "category": "Furniture"})

    assert response.status_code == 200
    assert card_ids(response) == []
    assert "No items match “teapot” in Furniture." in text(response)
    assert elements(response, "a", href="?q=teapot")


def test_a_query_that_is_too_long_gives_400_with_the_reason_and_the_query_to_shorten(client, indexed_catalogue):
    response = client.get("/search", {"q": "x" * 301})

    assert response.status_code == 400
    assert elements(response, "div", role="alert", data_search_error=None)
    assert "Shorten the search to at most 300 characters (it has 301)." in text(response)
    assert card_ids(response) == []
    assert elements(response, "input", name="q", value="x" * 301)


@pytest.mark.parametrize("path", ["/search?q=cat", "/items/1/", "/no-such-page"])
def test_the_header_search_box_takes_no_longer_query_than_a_search_allows(client, indexed_catalogue, path):
    response = client.get(path)

    (box,) = elements(response, "input", name="q", type="search")
    assert box["maxlength"] == "300"


@pytest.mark.parametrize("page", ["0", "-1", "abc", "", "1.5"])
def test_a_page_number_that_is_not_one_shows_the_first_page(client, indexed_catalogue, settings, page):
    settings.MEEPO_PAGE_SIZE = 3
    first = client.get("/search", {"q": "animal"})

    response = client.get("/search", {"q": "animal", "page": page})

    assert response.status_code == 200
    assert card_ids(response) == card_ids(first)
    assert elements(response, "a", href="?q=animal&page=1", aria_current="page")


@pytest.mark.parametrize("page", ["4", "1001", "99999999999999999999999"])
def test_a_page_past_the_last_one_links_to_the_last_page(client, indexed_catalogue, settings, page):
    settings.MEEPO_PAGE_SIZE = 3

    response = client.get("/search", {"q": "animal", "page": page})

    assert response.status_code == 404
    assert card_ids(response) == []
    assert "There are only 3 pages of results." in text(response)
    assert elements(response, "a", href="?q=animal&page=3")
    assert "No items match" not in text(response)


def test_a_page_past_the_only_page_links_to_the_results(client, indexed_catalogue):
    response = client.get("/search", {"q": "animal", "category": "People", "page": 2})

    assert response.status_code == 404
    assert "There is only 1 page of results." in text(response)
    assert elements(response, "a", href="?q=animal&category=People&page=1")


def test_a_broken_photo_search_address_asks_to_search_again(client, indexed_catalogue):
    response = client.get("/search", {"photo": "bad!"})

    assert response.status_code == 400
    assert "This photo search address is not complete. Search with the photo again." in text(response)


@pytest.mark.parametrize("query", ["\u200b\u200b", " \ufeff\u2060 ", "\u200e"])
def test_a_query_of_invisible_characters_is_no_query(client, indexed_catalogue, query):
    response = client.get("/search", {"q": query})

    assert response.status_code == 302 and response["Location"] == reverse("search:home")


def test_invisible_characters_around_a_query_are_dropped(client, indexed_catalogue):
    response = client.get("/search", {"q": "\u200bcat\ufeff"})

    assert response.status_code == 200
    assert elements(response, "input", name="q", value="cat")


def test_the_photo_card_says_how_large_a_photo_may_be(client, small_catalogue, settings):
    settings.MEEPO_MAX_UPLOAD_BYTES = 5 * 1024 * 1024

    response = client.get("/")

    assert elements(response, "input", name="image", data_max_bytes=str(5 * 1024 * 1024))
    assert "JPEG, PNG, WebP, GIF, BMP or TIFF, up to 5.0\xa0MB." in text(response)
    # The page script says what is wrong with a chosen file here.
    assert elements(response, "p", data_photo_problem=None, role="alert")


def test_a_photo_too_large_to_upload_says_so_with_a_way_back_to_the_photo_search(client, small_catalogue, settings):
    settings.MEEPO_MAX_UPLOAD_BYTES = 1024
    too_large = SimpleUploadedFile("big.jpg", b"\xff" * 100_000, content_type="image/jpeg")

    response = client.post("/search/photo", {"image": too_large})

    assert response.status_code == 413
    assert "Your photo could not be searched</h1>" in text(response)
    assert "<title>Your photo could not be searched · Meepo</title>" in text(response)
    assert "The upload is larger than 1.0" in text(response)
    assert elements(response, "a", href="/#photo-search", data_photo_retry=None)
    assert elements(client.get("/"), "form", id="photo-search", data_photo_form=None)


def test_an_expired_photo_search_gives_404_and_asks_to_search_again(client, indexed_catalogue):
    response = client.get("/search", {"photo": "no-such-token"})

    assert response.status_code == 404
    assert "This photo search has expired. Search with the photo again." in text(response)


def test_searching_before_the_catalogue_is_indexed_gives_503_with_what_to_run(client, small_catalogue):
    response = client.get("/search", {"q": "cat"})

    assert response.status_code == 503
    assert "Run: python manage.py embed_catalog" in text(response)


def test_searching_with_a_catalogue_photo_finds_that_item_first(client, indexed_catalogue):
    cat = next(item for item in indexed_catalogue if item.title == "Tabby cat print")
    upload = SimpleUploadedFile("cat.jpg", CAT_PHOTO.read_bytes(), content_type="image/jpeg")

    response = client.post("/search/photo", {"image": upload}, follow=True)

    (redirect_url, status), *_ = response.redirect_chain
    assert status == 302 and redirect_url.startswith("/search?photo=")
    assert response.status_code == 200
    assert card_ids(response)[0] == cat.id
    assert len(card_ids(response)) == 8
    (preview,) = elements(response, "img", alt="The photo you searched with")
    assert preview["src"].startswith("data:image/jpeg;base64,")
    assert "Items that look like your photo" in text(response)


def test_a_photo_search_keeps_the_photo_in_the_category_filter(client, indexed_catalogue):
    upload = SimpleUploadedFile("cat.jpg", CAT_PHOTO.read_bytes(), content_type="image/jpeg")
    results_url = client.post("/search/photo", {"image": upload}).url
    token = results_url.split("photo=")[1]

    response = client.get("/search", {"photo": token, "category": "People"})

    assert {item.id for item in indexed_catalogue if item.category == "People"} == set(card_ids(response))
    assert elements(response, "input", type="hidden", name="photo", value=token)
    assert not elements(response, "input", type="hidden", name="q")


def test_a_file_that_is_not_an_image_gives_400_and_stores_nothing(client, indexed_catalogue, data_dir):
    client.get("/")  # the category choices are cached: a file, but not the upload's
    before = (Item.objects.count(), ItemImage.objects.count(), files_under(data_dir))
    upload = SimpleUploadedFile("notes.jpg", b"these are my shopping notes", content_type="image/jpeg")

    response = client.post("/search/photo", {"image": upload})

    assert response.status_code == 400
    assert len(elements(response, "div", role="alert", data_photo_error=None)) == 1
    assert "The file is not an image in a supported format" in text(response)
    assert (Item.objects.count(), ItemImage.objects.count(), files_under(data_dir)) == before


def test_a_photo_search_without_a_photo_asks_for_one(client, indexed_catalogue):
    response = client.post("/search/photo", {"url": "  "})

    assert response.status_code == 400
    assert "Choose a photo, drop one here, paste one, or give a photo&#x27;s URL." in text(response)
    assert "data-empty-catalogue" not in text(response)


def test_a_photo_search_with_a_box_searches_with_that_region_and_outlines_it(client, indexed_catalogue):
    dogs = indexed_catalogue[5]
    box = a_window(dogs.images.first(), 4)

    response = client.post("/search/photo", {"image": photo_upload(dogs), "box": box}, follow=True)

    assert response.status_code == 200
    assert card_ids(response)[0] == dogs.id
    assert "{#" not in text(response)
    first = elements(response, "a", data_result_card=None)[0]
    assert first["data-match"] == "region"
    assert first["href"].startswith(f"{dogs.get_absolute_url()}?image={dogs.images.first().id}&box=")
    assert elements(response, "span", data_outline=None)
    assert elements(response, "span", data_region_badge=None)
    assert "Compared with whole photos and parts of them" in text(response)


def test_a_photo_search_shows_the_mode_it_was_made_with(client, indexed_catalogue):
    response = client.post("/search/photo", {"image": photo_upload(indexed_catalogue[3]), "mode": "full"}, follow=True)

    assert len(elements(response, "p", data_photo_mode=None)) == 1
    assert "Compared with whole photos only" in text(response)
    assert {card["data-match"] for card in elements(response, "a", data_result_card=None)} == {"full"}
    assert not elements(response, "span", data_outline=None)


@pytest.mark.parametrize(
    ("box", "message"),
    [
        ("0,0,10,40", "The box must be at least 16 pixels on each side."),
        ("5000,0,40,40", "The box must lie inside the photo (451×300 pixels)."),
        ("1,2,3", "box must be four numbers x,y,w,h in the photo&#x27;s pixels."),
    ],
)
def test_a_bad_box_gives_400_with_the_reason_on_the_page(client, indexed_catalogue, box, message):
    cat = indexed_catalogue[3]

    response = client.post("/search/photo", {"image": photo_upload(cat), "box": box, "mode": "region"})

    assert response.status_code == 400
    assert len(elements(response, "div", role="alert", data_photo_error=None)) == 1
    assert message in text(response)
    # The shopper's choices survive the error.
    assert elements(response, "option", value="region", selected=None)


def test_finding_items_like_part_of_a_catalogue_image_names_the_item_and_leaves_it_out(client, indexed_catalogue):
    cat = indexed_catalogue[3]
    image = cat.images.first()

    response = client.post(
        "/search/photo", {"item_image": image.id, "box": a_window(image, 0), "mode": "both"}, follow=True
    )

    assert response.status_code == 200
    assert f"Items like part of {cat.title}</h1>" in text(response)
    assert f"<title>Items like part of {cat.title} · Meepo</title>" in text(response)
    assert "Items that look like your photo" not in text(response)
    assert len(card_ids(response)) == len(indexed_catalogue) - 1
    assert cat.id not in card_ids(response)


def test_finding_items_like_a_whole_catalogue_image_names_the_item(client, indexed_catalogue):
    cat = indexed_catalogue[3]

    response = client.post("/search/photo", {"item_image": cat.images.first().id, "mode": "full"}, follow=True)

    assert f"Items like {cat.title}</h1>" in text(response)
    assert cat.id not in card_ids(response)


def test_the_item_page_offers_to_find_items_like_part_of_its_photo(client, indexed_catalogue):
    cat = indexed_catalogue[3]

    response = client.get(cat.get_absolute_url())

    (form,) = elements(response, "form", data_part_search=None)
    assert form["action"] == reverse("search:photo") and form["method"] == "post"
    assert elements(response, "input", type="hidden", name="item_image", value=str(cat.images.first().id))
    assert elements(response, "input", type="hidden", name="box", value="")
    assert elements(response, "input", type="hidden", name="mode", value="both")
    assert elements(response, "button", data_part_search_start=None)
    assert "Find items like this part" in text(response)


def test_the_item_page_outlines_the_region_a_result_matched(client, indexed_catalogue):
    cat = indexed_catalogue[3]
    image = cat.images.first()

    response = client.get(cat.get_absolute_url(), {"image": image.id, "box": "113,75,225,150"})

    assert response.status_code == 200
    (outline,) = elements(response, "div", data_outline=None)
    assert outline["style"] == "left: 25.06%; top: 25.00%; width: 49.89%; height: 50.00%"
    assert outline["data-image-id"] == str(image.id)
    assert "matched region" in text(response)
    (frame,) = elements(response, "div", data_gallery_frame=None)
    assert frame["style"] == "--w: 451; --h: 300"


@pytest.mark.parametrize("box", ["0,0,452,300", "-5,0,40,40", "a,b,c,d", ""])
def test_the_item_page_ignores_a_bad_box_and_shows_no_outline(client, indexed_catalogue, box):
    cat = indexed_catalogue[3]

    response = client.get(cat.get_absolute_url(), {"image": cat.images.first().id, "box": box})

    assert response.status_code == 200
    assert not elements(response, "div", data_outline=None)
    assert "matched region" not in text(response)


def test_a_text_search_can_match_parts_of_photos_and_pages_keep_that_choice(client, indexed_catalogue, settings):
    settings.MEEPO_PAGE_SIZE = 3

    plain = client.get("/search", {"q": "animal"})
    with_regions = client.get("/search", {"q": "animal", "regions": "on"})

    assert not elements(plain, "input", type="checkbox", name="regions", checked=None)
    assert elements(plain, "input", type="checkbox", name="regions")
    assert elements(with_regions, "input", type="checkbox", name="regions", checked=None)
    assert {card["data-match"] for card in elements(plain, "a", data_result_card=None)} == {"full"}
    assert elements(with_regions, "a", href="?q=animal&regions=on&page=2", rel="next")


def test_the_item_page_shows_the_details_and_more_like_this(client, indexed_catalogue):
    cat = next(item for item in indexed_catalogue if item.title == "Tabby cat print")

    response = client.get(cat.get_absolute_url())

    assert response.status_code == 200
    assert "<h1" in text(response) and "Tabby cat print</h1>" in text(response)
    assert f"{cat.price} <span" in text(response)
    assert elements(response, "img", alt="Tabby cat print", data_gallery_main=None)
    for tag in cat.tag_list:
        assert elements(response, "a", href=f"/search?q={tag.replace(' ', '%20')}")
    assert "More like this" in text(response)
    similar = card_ids(response)
    assert len(similar) == 7
    assert cat.id not in similar


def test_the_item_page_links_to_the_shop_only_when_the_item_has_a_url(client, indexed_catalogue):
    cat, other = indexed_catalogue[3], indexed_catalogue[4]
    cat.url = "https://shop.example/cat"
    cat.save()

    assert elements(client.get(cat.get_absolute_url()), "a", href="https://shop.example/cat")
    assert "View in shop" not in text(client.get(other.get_absolute_url()))


def test_the_item_page_before_embedding_says_the_catalogue_is_not_indexed(client, small_catalogue):
    response = client.get(small_catalogue[0].get_absolute_url())

    assert response.status_code == 200
    assert card_ids(response) == []
    assert "The catalogue has not been indexed yet." in text(response)


def test_the_item_page_says_when_the_index_was_built_with_another_model(client, settings, indexed_catalogue):
    settings.MEEPO_CLIP_MODEL, settings.MEEPO_CLIP_PRETRAINED = "ViT-B-32", "openai"

    response = client.get(indexed_catalogue[0].get_absolute_url())

    assert response.status_code == 200
    assert card_ids(response) == []
    assert "Meepo is configured for ViT-B-32:openai" in text(response)


def test_a_hidden_item_is_not_found(client, indexed_catalogue):
    hidden = indexed_catalogue[0]
    hidden.active = False
    hidden.save()

    response = client.get(hidden.get_absolute_url())

    assert response.status_code == 404
    assert "This page is not in the catalogue" in text(response)
    assert hidden.title not in text(response)


def test_the_server_error_page_renders_without_a_request_or_database():
    # As django.views.defaults.server_error does: no context, no request, no context processors.
    html = loader.get_template("500.html").render()

    assert "Something went wrong on our side" in html
    assert 'href="/static/css/dist/styles.css"' in html


@pytest.mark.parametrize(
    "path",
    [
        "/search?q=%00",
        "/search?q=cat&page=abc",
        "/search?q=cat&page=-1",
        "/search?q=cat&page=99999999999999999999999",
        "/search?q=cat&category=%00",
        "/search?photo=not-a-token",
        "/search?photo=%00&page=2",
        "/search?q=cat&regions=perhaps",
        "/items/1/?image=abc&box=zzz",
        "/items/1/?image=99999999999999999999999&box=1,2,3,4",
        "/items/99999999999999999999999/",
    ],
)
def test_pages_answer_bad_parameters_with_a_4xx_or_a_page_never_a_500(client, indexed_catalogue, path):
    response = client.get(path)

    assert response.status_code in (200, 400, 404), response.status_code
    assert b"<html" in response.content


def test_the_api_docs_come_from_the_site_not_a_cdn(client, db):
    response = client.get("/api/docs")

    assert response.status_code == 200
    assert "cdn.jsdelivr.net" not in text(response)
    scripts = [attrs["src"] for attrs in elements(response, "script") if attrs.get("src")]
    assert "/static/ninja/swagger-ui-bundle.js" in scripts
    # collectstatic copies what the finders find.
    assert finders.find("ninja/swagger-ui-bundle.js") and finders.find("ninja/swagger-ui.css")


def test_the_site_has_a_favicon_where_browsers_look_for_one(client, db):
    response = client.get("/favicon.ico")

    assert response.status_code == 302 and response["Location"] == "/static/img/favicon.ico"
    assert finders.find("img/favicon.ico")


def test_results_have_a_heading_over_the_cards_whose_photos_leave_the_naming_to_the_title(client, indexed_catalogue):
    response = client.get("/search", {"q": "cat"})

    # h1, then h2, then the cards' h3: no level skipped.
    assert '<h2 class="sr-only">Results</h2>' in text(response)
    card_photos = elements(response, "img", loading="lazy")
    assert len(card_photos) == len(card_ids(response)) > 0
    assert {attrs["alt"] for attrs in card_photos} == {""}
