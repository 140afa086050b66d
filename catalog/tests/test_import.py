import json
import shutil

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from catalog.importing import import_catalog
from catalog.models import Item, ItemImage
from meepo.testing import DEMO_DIR, demo_rows, write_catalogue


def test_it_imports_a_csv_with_every_column(db, data_dir, tmp_path):
    report = import_catalog(path=write_catalogue(tmp_path, demo_rows(3)))

    assert (report.created, report.updated, report.skipped, report.failed) == (3, 0, 0, 0)
    item = Item.objects.get(sku="DEMO-001")
    assert item.title == "Astronaut portrait poster"
    assert item.category == "People"
    assert str(item.price) == "14.90" and item.currency == "EUR"
    assert "astronaut" in item.tag_list
    image = item.images.get()
    assert image.width > 0 and image.height > 0 and len(image.sha256) == 64
    assert image.embedding_state == ItemImage.State.PENDING
    assert (data_dir / "media" / image.file.name).is_file()
    assert (data_dir / "media" / image.thumbnail_name).is_file()


def test_reimporting_the_same_file_changes_nothing(db, data_dir, tmp_path):
    path = write_catalogue(tmp_path, demo_rows(3))
    import_catalog(path=path)

    report = import_catalog(path=path)

    assert (report.created, report.updated, report.skipped) == (0, 0, 3)
    assert Item.objects.count() == 3 and ItemImage.objects.count() == 3


def test_reimport_updates_items_by_sku(db, data_dir, tmp_path):
    rows = demo_rows(2)
    import_catalog(path=write_catalogue(tmp_path, rows))
    rows[0]["title"] = "Renamed poster"
    rows[0]["price"] = "9.99"

    report = import_catalog(path=write_catalogue(tmp_path, rows))

    assert (report.created, report.updated, report.skipped) == (0, 1, 1)
    item = Item.objects.get(sku="DEMO-001")
    assert item.title == "Renamed poster" and str(item.price) == "9.99"


def test_rows_without_sku_are_matched_by_image_bytes(db, data_dir, tmp_path):
    rows = demo_rows(2)
    for row in rows:
        row["sku"] = ""
    import_catalog(path=write_catalogue(tmp_path, rows))
    rows[1]["title"] = "New title, same photo"

    report = import_catalog(path=write_catalogue(tmp_path, rows))

    assert (report.created, report.updated) == (0, 1)
    assert Item.objects.count() == 2
    assert Item.objects.filter(title="New title, same photo").exists()


def test_a_changed_image_is_marked_for_embedding_again(db, data_dir, tmp_path):
    rows = demo_rows(1)
    import_catalog(path=write_catalogue(tmp_path, rows))
    ItemImage.objects.update(embedding_state=ItemImage.State.EMBEDDED)
    shutil.copy(DEMO_DIR / "images" / "raccoon.jpg", tmp_path / rows[0]["image"])

    report = import_catalog(path=write_catalogue(tmp_path, rows))

    assert report.updated == 1
    image = ItemImage.objects.get()
    assert image.embedding_state == ItemImage.State.PENDING


def test_bad_rows_are_reported_with_their_line_and_the_good_rows_land(db, data_dir, tmp_path):
    rows = demo_rows(4)
    rows[1]["price"] = "twelve"
    rows[2]["image"] = "images/missing.jpg"
    rows[3]["title"] = ""
    problems = []

    report = import_catalog(path=write_catalogue(tmp_path, rows), on_problem=problems.append)

    assert (report.created, report.failed) == (1, 3)
    assert problems == [
        "line 3: price 'twelve' is not a number",
        "line 4: image images/missing.jpg not found",
        "line 5: title is empty",
    ]
    assert Item.objects.count() == 1 and ItemImage.objects.count() == 1


def test_a_file_that_is_not_an_image_fails_its_row_only(db, data_dir, tmp_path):
    rows = demo_rows(2)
    path = write_catalogue(tmp_path, rows)
    (tmp_path / rows[0]["image"]).write_bytes(b"<svg xmlns='http://www.w3.org/2000/svg'></svg>")

    report = import_catalog(path=path)

    assert (report.created, report.failed) == (1, 1)
    assert "not an image" in report.problems[0]
    assert not Item.objects.filter(sku="DEMO-001").exists()


def test_it_imports_jsonl_with_lists(db, data_dir, tmp_path):
    write_catalogue(tmp_path, demo_rows(3))
    lines = [
        {"title": "Cat", "sku": "J-1", "image": ["images/astronaut-eileen-collins.jpg", "images/grace-hopper.jpg"]},
        "not json",
        {"title": "Priced", "price": 3, "currency": "usd", "tags": ["a", "b"], "image": "images/cameraman.jpg"},
    ]
    path = tmp_path / "items.jsonl"
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines))

    report = import_catalog(path=path)

    assert (report.created, report.failed) == (2, 1)
    assert report.problems[0].startswith("line 2: not valid JSON")
    assert Item.objects.get(sku="J-1").images.count() == 2
    priced = Item.objects.get(title="Priced")
    assert priced.currency == "USD" and priced.tag_list == ["a", "b"]


def test_it_imports_a_folder_one_item_per_image(db, data_dir, tmp_path):
    (tmp_path / "Animals").mkdir()
    shutil.copy(DEMO_DIR / "images" / "chelsea-cat.jpg", tmp_path / "Animals" / "chelsea_cat.jpg")
    shutil.copy(DEMO_DIR / "images" / "espresso-cup.jpg", tmp_path / "espresso-cup.jpg")
    (tmp_path / "notes.txt").write_text("not an image")

    report = import_catalog(path=tmp_path)

    assert report.created == 2
    cat = Item.objects.get(title="Chelsea cat")
    assert cat.category == "Animals"
    assert Item.objects.filter(title="Espresso cup", category="").exists()


def test_remote_images_with_a_refused_scheme_fail_the_row(db, data_dir, tmp_path):
    rows = demo_rows(1)
    rows[0]["image"] = "file:///etc/passwd"

    report = import_catalog(path=write_catalogue(tmp_path, rows))

    assert report.failed == 1 and "only http(s) URLs" in report.problems[0]


def test_remote_images_on_private_addresses_are_refused(db, data_dir, tmp_path):
    rows = demo_rows(1)
    rows[0]["image"] = "http://127.0.0.1:9/cat.jpg"

    report = import_catalog(path=write_catalogue(tmp_path, rows))

    assert report.failed == 1 and "private or local addresses" in report.problems[0]


def test_the_command_prints_a_summary_and_problems(db, data_dir, tmp_path, capsys):
    rows = demo_rows(2)
    rows[1]["currency"] = "EURO"

    call_command("import_catalog", str(write_catalogue(tmp_path, rows)))

    out, err = capsys.readouterr()
    assert "created 1, updated 0, skipped 0, failed 1" in out
    assert "line 3: currency 'EURO'" in err


def test_the_command_refuses_an_unknown_file_type(db, data_dir, tmp_path):
    path = tmp_path / "items.xlsx"
    path.write_text("x")

    with pytest.raises(CommandError, match=r"expected a folder of images, a \.csv or a \.jsonl file"):
        call_command("import_catalog", str(path))


def test_image_paths_outside_the_catalogue_folder_are_refused(db, data_dir, tmp_path):
    rows = demo_rows(1)
    rows[0]["image"] = str(DEMO_DIR / "images" / "raccoon.jpg")

    report = import_catalog(path=write_catalogue(tmp_path / "inside", rows))

    assert report.failed == 1 and "must be a path inside" in report.problems[0]


def test_a_folder_import_of_the_same_photo_keeps_the_csv_fields(db, data_dir, tmp_path):
    rows = demo_rows(1)
    import_catalog(path=write_catalogue(tmp_path / "csv", rows))
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(DEMO_DIR / rows[0]["image"], folder / "astronaut.jpg")

    import_catalog(path=folder)

    item = Item.objects.get()
    assert (item.sku, str(item.price), item.currency) == ("DEMO-001", "14.90", "EUR")


def test_over_long_values_fail_their_row_on_every_database(db, data_dir, tmp_path):
    rows = demo_rows(2)
    rows[0]["url"] = "https://example.com/" + "a" * 1000
    rows[1]["tags"] = "|".join(["tag"] * 200)

    report = import_catalog(path=write_catalogue(tmp_path, rows))

    assert report.failed == 2
    assert "url is longer than 1000" in report.problems[0] and "tags are longer" in report.problems[1]
