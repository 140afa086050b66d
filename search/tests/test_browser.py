"""The pages in a real headless Chromium: the search a shopper makes, including drop and paste."""

import base64
import io
import re
from pathlib import Path

import pytest
from PIL import Image
from playwright.sync_api import expect

from meepo.testing import DEMO_DIR
from pipeline.window_embedding import configured_layout
from pipeline.windows import windows

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
CAT_PHOTO = DEMO_DIR / "images" / "chelsea-cat.jpg"
PHOTO_RESULTS = re.compile(r"/search\?photo=[\w-]+$")

# A DataTransfer holding the photo, as a drop or a paste from another application delivers it.
PHOTO_TRANSFER = """([data, name]) => {
    const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
    const transfer = new DataTransfer();
    transfer.items.add(new File([bytes], name, {type: "image/jpeg"}));
    return transfer;
}"""


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium to run the browser tests")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop running in this thread for as long as it lives, and
    # Django then refuses the ORM calls made here (fixtures, assertions, the database flush) as if
    # they came from async code. The live server answers from its own thread.
    with pytest.MonkeyPatch.context() as patch, sync_playwright() as playwright:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, live_server):
    context = browser.new_context(base_url=live_server.url)
    page = context.new_page()
    page.set_default_timeout(20_000)
    yield page
    context.close()


@pytest.fixture
def phone(browser, live_server):
    """A page in a touch-screen phone's viewport."""
    context = browser.new_context(
        base_url=live_server.url, viewport={"width": 390, "height": 844}, has_touch=True, is_mobile=True
    )
    page = context.new_page()
    page.set_default_timeout(20_000)
    yield page
    context.close()


def card_ids(page) -> list[int]:
    return [int(card.get_attribute("data-item-id")) for card in page.locator("[data-result-card]").all()]


def the_cat(items):
    return next(item for item in items if item.title == "Tabby cat print")


def a_window(item, number: int) -> tuple[int, int, int, int]:
    """One of the windows the index holds for the item's photo, in the photo's pixels."""
    image = item.images.first()
    return windows(image.width, image.height, configured_layout())[number]


def at(page, photo: str, x: float, y: float) -> tuple[float, float]:
    """Where the point (x, y) of the photo, in its own pixels, lies on the page where `photo` (an
    <img>) shows it; scrolled into view and settled first."""
    image = page.locator(photo)
    image.scroll_into_view_if_needed()
    page.wait_for_function(
        "(selector) => new Promise((settled) => { const image = document.querySelector(selector);"
        " const top = image.getBoundingClientRect().top;"
        " requestAnimationFrame(() => requestAnimationFrame(() =>"
        " settled(image.naturalWidth > 0 && image.getBoundingClientRect().top === top))); })",
        arg=photo,
    )
    shown = image.bounding_box()
    scale = shown["width"] / image.evaluate("(image) => image.naturalWidth")
    return shown["x"] + x * scale, shown["y"] + y * scale


def drawing(page, photo: str, box) -> tuple[tuple[float, float], tuple[float, float]]:
    """A drag that draws `box` (in the photo's pixels) over `photo`: from the box's far corner to
    its near one, overshooting the photo's edge where the box touches it, as a shopper does to get
    the whole edge (the box is clamped to the photo)."""
    x, y, w, h = box
    end = at(page, photo, x, y)
    return at(page, photo, x + w, y + h), (end[0] - (10 if x == 0 else 0), end[1] - (10 if y == 0 else 0))


def drag_with_the_mouse(page, start, end):
    page.mouse.move(*start)
    page.mouse.down()
    page.mouse.move((start[0] + end[0]) / 2, (start[1] + end[1]) / 2, steps=4)
    page.mouse.move(*end, steps=4)
    page.mouse.up()


def drag_with_a_finger(page, start, end):
    # Playwright's touchscreen only taps; Chromium's own input events make a real touch drag, which
    # the page sees as pointer events with pointerType "touch".
    session = page.context.new_cdp_session(page)
    session.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [{"x": start[0], "y": start[1]}]})
    for step in range(1, 9):
        x = start[0] + (end[0] - start[0]) * step / 8
        y = start[1] + (end[1] - start[1]) * step / 8
        session.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [{"x": x, "y": y}]})
    session.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
    session.detach()


def box_field(page, form: str) -> tuple[int, ...]:
    value = page.locator(f"{form} input[name=box]").input_value()
    return tuple(int(number) for number in value.split(",")) if value else ()


def close_to(found, wanted, pixels: int = 2) -> bool:
    return len(found) == len(wanted) and all(abs(a - b) <= pixels for a, b in zip(found, wanted, strict=True))


def test_a_text_search_from_the_home_page_shows_result_cards(page, indexed_catalogue):
    page.goto("/")
    page.get_by_label("Describe what you are looking for").fill("a ginger cat")
    page.keyboard.press("Enter")

    page.wait_for_url(re.compile(r"/search\?q=a\+ginger\+cat"))
    assert sorted(card_ids(page)) == sorted(item.id for item in indexed_catalogue)
    assert page.locator("h1").inner_text() == "“a ginger cat”"


def test_choosing_a_photo_shows_it_and_waits_for_the_shopper_to_search(page, indexed_catalogue):
    page.goto("/")
    page.get_by_label("Photo file").set_input_files(CAT_PHOTO)

    assert page.get_by_alt_text("The photo you chose").is_visible()
    assert page.get_by_role("button", name="Search this region").is_disabled()
    assert page.url.endswith("/")
    page.get_by_role("button", name="Search whole photo").click()

    page.wait_for_url(PHOTO_RESULTS)
    assert card_ids(page)[0] == the_cat(indexed_catalogue).id
    assert page.get_by_alt_text("The photo you searched with").is_visible()


def test_dropping_a_photo_on_the_card_shows_it_to_search_with(page, indexed_catalogue):
    page.goto("/")
    transfer = page.evaluate_handle(PHOTO_TRANSFER, [base64.b64encode(CAT_PHOTO.read_bytes()).decode(), "cat.jpg"])
    page.dispatch_event("[data-photo-drop]", "dragenter", {"dataTransfer": transfer})
    assert "is-dragging" in page.locator("[data-photo-drop]").get_attribute("class")

    page.dispatch_event("[data-photo-drop]", "drop", {"dataTransfer": transfer})

    assert page.get_by_alt_text("The photo you chose").is_visible()
    assert page.locator("[data-photo-input]").evaluate("(input) => input.files[0].name") == "cat.jpg"
    page.get_by_role("button", name="Search whole photo").click()
    page.wait_for_url(PHOTO_RESULTS)
    assert card_ids(page)[0] == the_cat(indexed_catalogue).id


def test_pasting_a_photo_anywhere_on_the_page_shows_it_to_search_with(page, indexed_catalogue):
    page.goto("/")
    transfer = page.evaluate_handle(PHOTO_TRANSFER, [base64.b64encode(CAT_PHOTO.read_bytes()).decode(), "cat.jpg"])

    page.evaluate(
        "(transfer) => document.body.dispatchEvent("
        "new ClipboardEvent('paste', {clipboardData: transfer, bubbles: true, cancelable: true}))",
        transfer,
    )

    assert page.get_by_alt_text("The photo you chose").is_visible()
    page.get_by_role("button", name="Search whole photo").click()
    page.wait_for_url(PHOTO_RESULTS)
    assert card_ids(page)[0] == the_cat(indexed_catalogue).id


def test_a_box_drawn_with_the_mouse_searches_with_that_region_and_outlines_the_match(page, indexed_catalogue):
    cat = the_cat(indexed_catalogue)
    window = a_window(cat, 0)
    page.goto("/")
    page.get_by_label("Photo file").set_input_files(CAT_PHOTO)

    drag_with_the_mouse(page, *drawing(page, "[data-photo-preview]", window))

    assert close_to(box_field(page, "[data-photo-form]"), window)
    page.get_by_role("button", name="Search this region").click()
    page.wait_for_url(PHOTO_RESULTS)
    first = page.locator("[data-result-card]").first
    assert int(first.get_attribute("data-item-id")) == cat.id
    assert first.get_attribute("data-match") == "region"
    assert first.locator("[data-outline]").is_visible()
    assert first.get_by_text("region match").is_visible()


def test_a_box_too_small_to_search_with_is_explained_and_not_sent(page, indexed_catalogue):
    page.goto("/")
    page.get_by_label("Photo file").set_input_files(CAT_PHOTO)

    drag_with_the_mouse(page, *drawing(page, "[data-photo-preview]", (100, 100, 10, 60)))

    assert box_field(page, "[data-photo-form]") == ()
    assert page.get_by_text("That box is too small").is_visible()
    assert page.get_by_role("button", name="Search this region").is_disabled()
    page.get_by_role("button", name="Clear box").click()
    assert page.get_by_text("That box is too small").is_hidden()


def test_a_box_can_be_moved_by_dragging_inside_it(page, indexed_catalogue):
    page.goto("/")
    page.get_by_label("Photo file").set_input_files(CAT_PHOTO)
    drag_with_the_mouse(page, *drawing(page, "[data-photo-preview]", (20, 20, 100, 100)))

    drag_with_the_mouse(page, at(page, "[data-photo-preview]", 60, 60), at(page, "[data-photo-preview]", 110, 90))

    assert close_to(box_field(page, "[data-photo-form]"), (70, 50, 100, 100))


def test_a_box_drawn_with_a_finger_fills_the_box_field(phone, indexed_catalogue):
    window = a_window(the_cat(indexed_catalogue), 1)
    phone.goto("/")
    phone.get_by_label("Photo file").set_input_files(CAT_PHOTO)

    drag_with_a_finger(phone, *drawing(phone, "[data-photo-preview]", window))

    assert close_to(box_field(phone, "[data-photo-form]"), window)
    search = phone.get_by_role("button", name="Search this region")
    assert search.is_enabled()
    # On a phone the button starts below the photo, out of sight.
    expect(search).to_be_in_viewport(ratio=1)


def test_pasting_text_into_the_search_box_stays_text(page, indexed_catalogue):
    page.goto("/")
    page.get_by_label("Describe what you are looking for").focus()

    not_cancelled = page.evaluate(
        "() => { const transfer = new DataTransfer(); transfer.setData('text/plain', 'red bowl');"
        "return document.activeElement.dispatchEvent("
        "new ClipboardEvent('paste', {clipboardData: transfer, bubbles: true, cancelable: true})); }"
    )

    assert not_cancelled
    assert page.locator("[data-photo-input]").evaluate("(input) => input.files.length") == 0
    assert page.locator("[data-photo-preview]").is_hidden()


def test_the_item_page_shows_more_like_this(page, indexed_catalogue):
    cat = the_cat(indexed_catalogue)
    page.goto(cat.get_absolute_url())

    assert page.locator("h1").inner_text() == "Tabby cat print"
    similar = [
        int(card.get_attribute("data-item-id")) for card in page.locator("[data-similar] [data-result-card]").all()
    ]
    assert len(similar) == 7
    assert cat.id not in similar


def test_finding_items_like_part_of_the_item_photo_searches_with_that_part(page, indexed_catalogue):
    cat = the_cat(indexed_catalogue)
    window = a_window(cat, 0)
    page.goto(cat.get_absolute_url())

    page.get_by_role("button", name="Find items like this part").click()
    drag_with_the_mouse(page, *drawing(page, "[data-gallery-main]", window))

    assert close_to(box_field(page, "[data-part-search]"), window)
    page.get_by_role("button", name="Search this part").click()
    page.wait_for_url(PHOTO_RESULTS)
    expect(page.locator("h1")).to_have_text("Items like part of Tabby cat print")
    # The shopper came from the item: it is left out of the results.
    assert cat.id not in card_ids(page)
    assert len(card_ids(page)) == len(indexed_catalogue) - 1
    # What was searched with is the part: the preview has the box's shape, not the photo's.
    searched = page.get_by_alt_text("The part you searched with")
    width, height = searched.evaluate("(image) => [image.naturalWidth, image.naturalHeight]")
    assert abs(width / height - window[2] / window[3]) < 0.05


def test_leaving_the_part_search_puts_the_outline_back(page, indexed_catalogue):
    cat = the_cat(indexed_catalogue)
    page.goto(f"{cat.get_absolute_url()}?image={cat.images.first().id}&box=113,75,225,150")
    assert page.locator("[data-outline]").is_visible()

    page.get_by_role("button", name="Find items like this part").click()
    assert page.locator("[data-outline]").is_hidden()
    assert page.get_by_role("button", name="Search this part").is_disabled()

    page.get_by_role("button", name="Cancel").click()
    assert page.locator("[data-outline]").is_visible()
    assert page.locator("[data-part-search]").is_hidden()


def paste(page, photo: bytes, name: str) -> None:
    transfer = page.evaluate_handle(PHOTO_TRANSFER, [base64.b64encode(photo).decode(), name])
    page.evaluate(
        "(transfer) => document.body.dispatchEvent("
        "new ClipboardEvent('paste', {clipboardData: transfer, bubbles: true, cancelable: true}))",
        transfer,
    )


def test_a_photo_pasted_on_the_results_page_is_scrolled_into_view(phone, indexed_catalogue):
    phone.goto("/search?q=cat")
    preview = phone.get_by_alt_text("The photo you chose")

    paste(phone, CAT_PHOTO.read_bytes(), "cat.jpg")

    expect(preview).to_be_in_viewport(ratio=1)
    assert phone.locator("[data-photo-input]").evaluate("(input) => input.files[0].name") == "cat.jpg"


def test_a_file_that_is_not_a_photo_is_said_to_be_one_and_gets_no_box_tool(page, indexed_catalogue):
    page.goto("/")

    page.get_by_label("Photo file").set_input_files(
        files=[{"name": "fake.jpg", "mimeType": "image/jpeg", "buffer": b"these are my shopping notes"}]
    )

    expect(page.locator("[data-photo-problem]")).to_have_text(
        "This file is not a photo we can read. Choose a JPEG, PNG, WebP or GIF photo."
    )
    assert page.locator("[data-photo-stage]").is_hidden()
    assert page.get_by_role("button", name="Search this region").is_hidden()
    assert page.get_by_role("button", name="Search by photo").is_visible()


def test_a_photo_over_the_size_limit_is_refused_before_it_is_uploaded(page, indexed_catalogue, settings):
    settings.MEEPO_MAX_UPLOAD_BYTES = 1024 * 1024
    page.goto("/")
    assert page.get_by_text("up to 1.0\xa0MB").is_visible()

    page.get_by_label("Photo file").set_input_files(
        files=[{"name": "big.jpg", "mimeType": "image/jpeg", "buffer": b"\xff" * 1_500_000}]
    )

    expect(page.locator("[data-photo-problem]")).to_have_text(
        "This photo is 1.4 MB: photos can be up to 1.0 MB. Choose a smaller one."
    )
    assert page.locator("[data-photo-input]").evaluate("(input) => input.files.length") == 0
    assert page.locator("[data-photo-stage]").is_hidden()

    page.get_by_label("Photo file").set_input_files(CAT_PHOTO)
    assert page.locator("[data-photo-problem]").is_hidden()
    assert page.get_by_alt_text("The photo you chose").is_visible()


def test_back_on_the_home_page_after_a_photo_search_the_photo_is_shown_again(page, indexed_catalogue):
    page.goto("/")
    page.get_by_label("Photo file").set_input_files(CAT_PHOTO)
    page.get_by_role("button", name="Search whole photo").click()
    page.wait_for_url(PHOTO_RESULTS)

    page.go_back()

    page.wait_for_url(re.compile(r"/$"))
    assert page.locator("[data-photo-input]").evaluate("(input) => input.files.length") == 1
    expect(page.get_by_alt_text("The photo you chose")).to_be_visible()
    expect(page.get_by_role("button", name="Search this region")).to_be_visible()


def test_back_to_a_results_page_its_filters_show_what_its_address_says(page, indexed_catalogue):
    page.goto("/search?q=cat")
    page.get_by_label("Category").select_option("Animals")
    page.wait_for_url(re.compile(r"category=Animals"))
    page.get_by_label("Also match parts of photos").check()
    page.wait_for_url(re.compile(r"regions=on"))

    page.go_back()
    page.wait_for_url(re.compile(r"/search\?q=cat&category=Animals$"))
    assert page.get_by_label("Category").input_value() == "Animals"
    assert not page.get_by_label("Also match parts of photos").is_checked()

    page.go_back()
    page.wait_for_url(re.compile(r"/search\?q=cat$"))
    assert page.get_by_label("Category").input_value() == ""


def test_a_phone_is_not_told_to_paste_with_ctrl_v(phone, small_catalogue):
    phone.goto("/")

    assert phone.get_by_text("Drop a photo on this card").is_visible()
    assert phone.get_by_text("paste one with").is_hidden()


def test_the_api_docs_work_without_the_internet(page, live_server, db):
    elsewhere = []

    def only_this_site(route):
        if route.request.url.startswith(live_server.url):
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    page.route("**/*", only_this_site)
    page.goto("/api/docs")

    expect(page.get_by_text("/api/search/image")).to_be_visible()
    assert elsewhere == []


def test_the_box_tools_focus_ring_is_drawn_inside_the_photo_which_clips_the_rest(page, indexed_catalogue):
    page.goto("/")
    page.get_by_label("Photo file").set_input_files(CAT_PHOTO)
    layer = page.locator("[data-photo-form] [data-box-layer]")
    expect(layer).to_be_visible()

    layer.focus()

    offset, width = layer.evaluate(
        "(layer) => { const style = getComputedStyle(layer);"
        " return [parseFloat(style.outlineOffset), parseFloat(style.outlineWidth)]; }"
    )
    assert width >= 2
    assert offset + width <= 0


def test_the_box_tool_says_where_the_box_is_for_screen_readers(page, indexed_catalogue):
    page.goto("/")
    page.get_by_label("Photo file").set_input_files(CAT_PHOTO)
    layer = page.locator("[data-photo-form] [data-box-layer]")
    expect(layer).to_be_visible()
    status = page.locator("[data-photo-form] [data-box-status]")
    assert status.get_attribute("aria-live") == "polite"

    layer.press("Enter")
    expect(status).to_have_text(re.compile(r"^Box 2\d\d×150 at 11\d, 75; arrows move, Shift\+arrows resize$"))
    layer.press("ArrowRight")
    expect(status).to_have_text(re.compile(r"^Box 2\d\d×150 at 12\d, 75;"))
    layer.press("Escape")
    expect(status).to_have_text("No box")


def test_a_tiff_photo_the_browser_cannot_show_can_still_be_searched_with(page, indexed_catalogue):
    tiff = io.BytesIO()
    Image.open(CAT_PHOTO).save(tiff, format="TIFF")
    page.goto("/")

    page.get_by_label("Photo file").set_input_files(
        files=[{"name": "cat.tiff", "mimeType": "image/tiff", "buffer": tiff.getvalue()}]
    )

    expect(page.locator("[data-photo-note]")).to_have_text("No preview for TIFF photos; you can still search with it.")
    assert page.locator("[data-photo-problem]").is_hidden()
    assert page.locator("[data-photo-stage]").is_hidden()
    page.get_by_role("button", name="Search by photo").click()
    page.wait_for_url(PHOTO_RESULTS)
    assert int(page.locator("[data-result-card]").first.get_attribute("data-item-id")) == the_cat(indexed_catalogue).id


def test_a_photo_too_large_chosen_on_a_phone_is_refused_in_sight(phone, indexed_catalogue, settings):
    settings.MEEPO_MAX_UPLOAD_BYTES = 1024 * 1024
    phone.goto("/")

    phone.get_by_label("Photo file").set_input_files(
        files=[{"name": "big.jpg", "mimeType": "image/jpeg", "buffer": b"\xff" * 1_500_000}]
    )

    expect(phone.locator("[data-photo-problem]")).to_be_in_viewport(ratio=1)


def test_the_page_links_on_a_phone_are_named_for_screen_readers(phone, indexed_catalogue, settings):
    settings.MEEPO_PAGE_SIZE = 3
    phone.goto("/search?q=cat&page=2")

    expect(phone.get_by_role("link", name="‹ Previous")).to_be_visible()
    expect(phone.get_by_role("link", name="Next ›")).to_be_visible()


def test_the_sticky_header_leaves_room_for_what_is_scrolled_to(page, indexed_catalogue):
    page.goto("/search?q=cat")

    header, padding = page.evaluate(
        "() => [document.querySelector('header').getBoundingClientRect().height,"
        " parseFloat(getComputedStyle(document.documentElement).scrollPaddingTop)]"
    )
    assert padding >= header
