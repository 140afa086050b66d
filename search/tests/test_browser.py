"""The pages in a real headless Chromium: the search a shopper makes, including drop and paste."""

import base64
import re
from pathlib import Path

import pytest

from meepo.testing import DEMO_DIR

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


def card_ids(page) -> list[int]:
    return [int(card.get_attribute("data-item-id")) for card in page.locator("[data-result-card]").all()]


def the_cat(items):
    return next(item for item in items if item.title == "Tabby cat print")


def test_a_text_search_from_the_home_page_shows_result_cards(page, indexed_catalogue):
    page.goto("/")
    page.get_by_label("Describe what you are looking for").fill("a ginger cat")
    page.keyboard.press("Enter")

    page.wait_for_url(re.compile(r"/search\?q=a\+ginger\+cat"))
    assert sorted(card_ids(page)) == sorted(item.id for item in indexed_catalogue)
    assert page.locator("h1").inner_text() == "“a ginger cat”"


def test_choosing_a_photo_searches_with_it_at_once(page, indexed_catalogue):
    page.goto("/")
    page.get_by_label("Photo file").set_input_files(CAT_PHOTO)

    page.wait_for_url(PHOTO_RESULTS)
    assert card_ids(page)[0] == the_cat(indexed_catalogue).id
    assert page.get_by_alt_text("The photo you searched with").is_visible()


def test_dropping_a_photo_on_the_card_searches_with_it(page, indexed_catalogue):
    page.goto("/")
    transfer = page.evaluate_handle(PHOTO_TRANSFER, [base64.b64encode(CAT_PHOTO.read_bytes()).decode(), "cat.jpg"])
    page.dispatch_event("[data-photo-drop]", "dragenter", {"dataTransfer": transfer})
    assert "is-dragging" in page.locator("[data-photo-drop]").get_attribute("class")

    page.dispatch_event("[data-photo-drop]", "drop", {"dataTransfer": transfer})

    page.wait_for_url(PHOTO_RESULTS)
    assert card_ids(page)[0] == the_cat(indexed_catalogue).id


def test_pasting_a_photo_anywhere_on_the_page_searches_with_it(page, indexed_catalogue):
    page.goto("/")
    transfer = page.evaluate_handle(PHOTO_TRANSFER, [base64.b64encode(CAT_PHOTO.read_bytes()).decode(), "cat.jpg"])

    page.evaluate(
        "(transfer) => document.body.dispatchEvent("
        "new ClipboardEvent('paste', {clipboardData: transfer, bubbles: true, cancelable: true}))",
        transfer,
    )

    page.wait_for_url(PHOTO_RESULTS)
    assert card_ids(page)[0] == the_cat(indexed_catalogue).id


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
