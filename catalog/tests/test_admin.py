import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from catalog.models import Item, ItemImage
from meepo.testing import DEMO_DIR


@pytest.fixture
def staff(admin_client):
    return admin_client


def test_the_item_list_shows_thumbnails_and_filters(staff, small_catalogue):
    response = staff.get("/admin/catalog/item/")

    assert response.status_code == 200
    html = response.content.decode()
    assert html.count('src="/media/thumbs/') == 8
    assert "By embedding state" in html and "By category" in html


def test_the_item_list_shows_each_item_s_embedding_state(staff, indexed_catalogue):
    ItemImage.objects.filter(item=indexed_catalogue[0]).update(embedding_state=ItemImage.State.FAILED)

    html = staff.get("/admin/catalog/item/").content.decode()

    assert html.count("1 embedded") == 7 and html.count("1 failed") == 1


def test_filtering_by_embedding_state(staff, small_catalogue):
    ItemImage.objects.filter(item=small_catalogue[0]).update(embedding_state=ItemImage.State.FAILED)

    response = staff.get("/admin/catalog/item/", {"embedding": "failed"})

    assert list(response.context["cl"].queryset) == [small_catalogue[0]]


def test_the_hide_and_unhide_actions(staff, small_catalogue):
    ids = [item.id for item in small_catalogue[:3]]

    staff.post("/admin/catalog/item/", {"action": "hide", "_selected_action": ids})
    assert Item.objects.filter(active=False).count() == 3
    staff.post("/admin/catalog/item/", {"action": "unhide", "_selected_action": ids})
    assert Item.objects.filter(active=False).count() == 0


def test_the_re_embed_action_marks_images_pending(staff, indexed_catalogue):
    staff.post("/admin/catalog/item/", {"action": "re_embed", "_selected_action": [indexed_catalogue[0].id]})

    assert ItemImage.objects.filter(embedding_state=ItemImage.State.PENDING).count() == 1


def test_the_item_page_shows_its_images_inline(staff, small_catalogue):
    response = staff.get(f"/admin/catalog/item/{small_catalogue[0].id}/change/")

    assert response.status_code == 200
    assert small_catalogue[0].images.first().thumbnail_url in response.content.decode()


def change_form(item: Item, **inline) -> dict:
    data = {
        "title": item.title,
        "description": item.description,
        "category": item.category,
        "price": item.price,
        "currency": item.currency,
        "url": item.url,
        "sku": item.sku or "",
        "tags": item.tags,
        "active": "on",
        "images-TOTAL_FORMS": "2",
        "images-INITIAL_FORMS": "1",
        "images-MIN_NUM_FORMS": "0",
        "images-MAX_NUM_FORMS": "1000",
        "images-0-id": item.images.first().id,
        "images-0-item": item.id,
        "images-0-position": "0",
        "images-0-source_url": "",
        "images-1-item": item.id,
        "images-1-position": "1",
        "images-1-source_url": "",
    }
    data.update(inline)
    return data


def test_an_admin_can_add_a_photo_to_an_item(staff, small_catalogue):
    item = small_catalogue[0]
    photo = SimpleUploadedFile("cup.jpg", (DEMO_DIR / "images" / "espresso-cup.jpg").read_bytes())

    response = staff.post(f"/admin/catalog/item/{item.id}/change/", change_form(item, **{"images-1-upload": photo}))

    assert response.status_code == 302
    added = item.images.get(position=1)
    assert added.width > 0 and added.embedding_state == ItemImage.State.PENDING
    assert added.file.name.startswith("catalog/")


def test_a_file_that_is_not_an_image_is_refused_in_the_admin(staff, small_catalogue):
    item = small_catalogue[0]
    junk = SimpleUploadedFile("cup.jpg", b"<html>no</html>")

    response = staff.post(f"/admin/catalog/item/{item.id}/change/", change_form(item, **{"images-1-upload": junk}))

    assert response.status_code == 200
    assert "not an image in a supported format" in response.content.decode()
    assert item.images.count() == 1


def test_the_admin_is_for_staff_only(client, small_catalogue):
    response = client.get("/admin/catalog/item/")

    assert response.status_code == 302 and "/admin/login/" in response["Location"]
