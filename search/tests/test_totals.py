"""`total` is how many items paging on would show, the same on every page."""

from catalog.models import Item
from pipeline.benchmarks.serving import populate


def test_the_total_is_the_same_on_every_page(client, db, data_dir):
    populate(150)  # more than the 100 nearest images the first page looks at

    totals = [
        client.get("/api/search", {"q": "a red mug", "limit": 24, "offset": offset}).json()["total"]
        for offset in (0, 48, 120)
    ]

    assert totals == [150, 150, 150]


def test_the_total_leaves_out_hidden_items_and_keeps_to_the_category(client, db, data_dir):
    populate(150)
    Item.objects.filter(id__in=Item.objects.order_by("id")[:10].values("id")).update(active=False)
    Item.forget_categories()  # what the admin's saves do; update() sends no signal

    assert client.get("/api/search", {"q": "a red mug", "limit": 5}).json()["total"] == 140
    in_category = client.get("/api/search", {"q": "a red mug", "limit": 5, "category": "Category 3"}).json()
    assert in_category["total"] == Item.objects.filter(active=True, category="Category 3").count()
