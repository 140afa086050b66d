"""A failure nobody planned for: the API still answers JSON (without the details), shopper pages
keep their error page, and the error is logged as Django logs it."""

import logging

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test import Client

from catalog.models import Item


@pytest.fixture
def corrupt_price(indexed_catalogue):
    """A price too big for its column, written past the ORM: SQLite does not enforce max_digits,
    and reading the item back fails in Django's decimal conversion."""
    if connection.vendor != "sqlite":
        pytest.skip("PostgreSQL enforces the column's precision: the corruption cannot be written")
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {Item._meta.db_table} SET price = 1e30")  # noqa: S608


@pytest.fixture
def browser():
    # Django's test client raises a view's exception in the test; a real client gets the 500.
    return Client(raise_request_exception=False)


def test_an_unexpected_error_in_the_api_is_a_json_500_without_the_details(browser, corrupt_price, caplog):
    with caplog.at_level(logging.ERROR, logger="django.request"):
        response = browser.get("/api/search", {"q": "a cat"})

    assert response.status_code == 500
    assert response["Content-Type"].startswith("application/json")
    assert response.json() == {"error": "Something went wrong on our side; it has been logged."}
    logged = [record for record in caplog.records if record.name == "django.request"]
    assert [record.getMessage() for record in logged] == ["Internal Server Error: /api/search"]
    assert logged[0].exc_info is not None


def test_every_search_of_the_api_fails_in_json(browser, corrupt_price, indexed_catalogue):
    item = indexed_catalogue[0]
    photo = SimpleUploadedFile("photo.jpg", item.images.first().read_bytes(), "image/jpeg")

    answers = [
        browser.get(f"/api/items/{item.id}/similar"),
        browser.post("/api/search/image", {"image": photo}),
    ]

    assert [answer.status_code for answer in answers] == [500, 500]
    assert all("went wrong" in answer.json()["error"] for answer in answers)


def test_the_same_failure_on_a_shopper_page_shows_the_error_page(browser, corrupt_price):
    response = browser.get("/search", {"q": "a cat"})

    assert response.status_code == 500
    assert response["Content-Type"].startswith("text/html")
    assert "Something went wrong on our side" in response.content.decode()
