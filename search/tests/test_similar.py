"""More like this, for an item whose photo the next embed_catalog has not reached yet."""

from meepo.testing import DEMO_DIR


def test_an_item_whose_photo_was_just_replaced_still_has_more_like_this(client, indexed_catalogue):
    item = indexed_catalogue[0]
    image = item.images.first()
    image.attach((DEMO_DIR / "images" / "raccoon.jpg").read_bytes())
    image.save()  # in the admin: no vector for these bytes until the next embed_catalog

    body = client.get(f"/api/items/{item.id}/similar", {"limit": 10}).json()

    ids = [result["item_id"] for result in body["results"]]
    assert len(ids) == 7 and item.id not in ids
