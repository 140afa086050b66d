"""The search forms' category choices: cached, and never stale after an edit."""

import threading

import pytest
from django.db import connection, connections, transaction

from catalog.models import Item


def test_a_new_category_appears_at_once(small_catalogue):
    before = Item.categories()

    Item.objects.create(title="Brass lamp", category="Lighting")

    assert "Lighting" not in before and "Lighting" in Item.categories()


def test_a_category_goes_when_its_last_item_is_deleted_or_edited(small_catalogue):
    people = [item for item in small_catalogue if item.category == "People"]
    assert "People" in Item.categories()
    people[0].delete()
    for item in people[1:]:
        item.category = "Portraits"
        item.save()

    assert "People" not in Item.categories() and "Portraits" in Item.categories()


def test_hiding_every_item_of_a_category_in_the_admin_drops_it(admin_client, small_catalogue):
    animals = [item.id for item in small_catalogue if item.category == "Animals"]
    assert "Animals" in Item.categories()

    admin_client.post("/admin/catalog/item/", {"action": "hide", "_selected_action": animals})
    assert "Animals" not in Item.categories()
    admin_client.post("/admin/catalog/item/", {"action": "unhide", "_selected_action": animals})
    assert "Animals" in Item.categories()


@pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite's query plans")
def test_the_storefront_s_newest_items_come_from_an_index_not_a_sort(small_catalogue):
    newest = Item.objects.filter(active=True)[:24]

    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN QUERY PLAN " + str(newest.query))
        plan = " ".join(str(row) for row in cursor.fetchall())

    assert "item_newest_active" in plan and "TEMP B-TREE" not in plan


# SQLite's in-memory test database locks a table against a second connection during a write.
@pytest.mark.skipif(connection.vendor == "sqlite", reason="needs a database that reads beside a writer")
@pytest.mark.django_db(transaction=True)
def test_a_page_rendered_while_an_import_commits_does_not_keep_the_old_categories(data_dir):
    Item.objects.create(title="Tea cup", category="Kitchen")
    assert Item.categories() == ["Kitchen"]

    def another_worker():
        seen.append(Item.categories())  # from before the commit: the new item is not visible yet
        connections.close_all()

    seen = []
    with transaction.atomic():
        Item.objects.create(title="Brass lamp", category="Lighting")
        worker = threading.Thread(target=another_worker)
        worker.start()
        worker.join()

    assert seen == [["Kitchen"]]
    assert Item.categories() == ["Kitchen", "Lighting"]
