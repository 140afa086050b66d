import csv
import json
import os
import shutil
from decimal import Decimal

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


def test_a_folder_import_of_the_same_photo_leaves_the_csv_item_as_it_is(db, data_dir, tmp_path):
    rows = demo_rows(1)
    rows[0]["image"] += "|images/grace-hopper.jpg"
    import_catalog(path=write_catalogue(tmp_path / "csv", rows))
    folder = tmp_path / "photos"
    (folder / "Posters").mkdir(parents=True)
    shutil.copy(DEMO_DIR / "images" / "astronaut-eileen-collins.jpg", folder / "Posters" / "astronaut.jpg")

    report = import_catalog(path=folder)

    assert (report.created, report.updated, report.skipped) == (0, 0, 1)
    item = Item.objects.get()
    assert (item.sku, str(item.price), item.currency) == ("DEMO-001", "14.90", "EUR")
    assert (item.title, item.category) == ("Astronaut portrait poster", "People")
    assert item.images.count() == 2


def test_over_long_values_fail_their_row_on_every_database(db, data_dir, tmp_path):
    rows = demo_rows(2)
    rows[0]["url"] = "https://example.com/" + "a" * 1000
    rows[1]["tags"] = "|".join(["tag"] * 200)

    report = import_catalog(path=write_catalogue(tmp_path, rows))

    assert report.failed == 2
    assert "url is longer than 1000" in report.problems[0] and "tags are longer" in report.problems[1]


def write_jsonl(folder, lines: list[dict | str]):
    """A JSONL catalogue in `folder`, beside the demo images that write_catalogue copied there."""
    path = folder / "items.jsonl"
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return path


def test_a_price_that_rounds_to_thirteen_digits_fails_its_row(db, data_dir, tmp_path):
    rows = demo_rows(3)
    rows[0]["price"] = "9999999999.999"
    rows[1]["price"] = "9999999999.99"
    write_catalogue(tmp_path, rows)
    jsonl = write_jsonl(tmp_path, [{"title": "Rounds up", "price": "9999999999.995", "image": rows[2]["image"]}])

    csv_report = import_catalog(path=tmp_path / "catalogue.csv")
    jsonl_report = import_catalog(path=jsonl)

    assert csv_report.problems == ["line 2: price '9999999999.999' is out of range"]
    assert jsonl_report.problems == ["line 1: price '9999999999.995' is out of range"]
    # Read back the way every page reads them: a 13-digit price made this raise.
    assert sorted(str(price) for price in Item.objects.values_list("price", flat=True)) == [
        "11.50",
        "9999999999.99",
    ]


def test_negative_and_not_finite_prices_fail_their_row(db, data_dir, tmp_path):
    write_catalogue(tmp_path, demo_rows(1))
    image = demo_rows(1)[0]["image"]
    lines = [{"title": str(price), "price": price, "image": image} for price in ("-0.001", "-0", "NaN", "1e40")]
    lines.append('{"title": "Infinite", "price": Infinity, "image": "' + image + '"}')

    report = import_catalog(path=write_jsonl(tmp_path, lines))

    assert report.failed == 5 and all("out of range" in problem for problem in report.problems)
    assert not Item.objects.exists()


def test_a_very_long_bad_value_is_quoted_shortened(db, data_dir, tmp_path):
    write_catalogue(tmp_path, demo_rows(1))
    lines = [{"title": "Long price", "price": "9" * 5000, "image": demo_rows(1)[0]["image"]}]

    report = import_catalog(path=write_jsonl(tmp_path, lines))

    assert report.failed == 1 and len(report.problems[0]) < 120 and "9999…" in report.problems[0]


@pytest.mark.parametrize("name", ["catalogue.csv", "items.jsonl"])
def test_a_file_that_is_not_utf8_is_refused_before_any_row_lands(db, data_dir, tmp_path, name):
    write_catalogue(tmp_path, demo_rows(3))
    good = (tmp_path / "catalogue.csv").read_bytes()
    if name.endswith(".jsonl"):
        good = b"".join(
            json.dumps({"title": row["title"], "image": row["image"]}).encode() + b"\n" for row in demo_rows(3)
        )
    (tmp_path / name).write_bytes(good + "Caf\xe9 cup,images/cameraman.jpg\n".encode("latin-1"))
    lines = good.count(b"\n") + 1

    with pytest.raises(CommandError, match=rf"{name}, line {lines}: the file is not UTF-8 text\. Save it as UTF-8"):
        call_command("import_catalog", str(tmp_path / name))

    assert not Item.objects.exists()


def test_a_field_too_large_for_the_csv_reader_fails_its_row_and_the_next_rows_land(db, data_dir, tmp_path):
    rows = demo_rows(3)
    rows[1]["description"] = "d" * 200_000

    report = import_catalog(path=write_catalogue(tmp_path, rows))

    assert report.problems == ["line 3: a field is longer than 131,072 characters"]
    assert set(Item.objects.values_list("sku", flat=True)) == {"DEMO-001", "DEMO-003"}


def test_descriptions_longer_than_10000_characters_fail_their_row(db, data_dir, tmp_path):
    rows = demo_rows(2)
    rows[0]["description"] = "d" * 10_000
    rows[1]["description"] = "d" * 10_001

    report = import_catalog(path=write_catalogue(tmp_path, rows))

    assert report.problems == ["line 3: description is longer than 10000 characters"]
    assert Item.objects.get().sku == "DEMO-001"


def test_an_unclosed_quote_is_reported_on_its_line(db, data_dir, tmp_path):
    write_catalogue(tmp_path, demo_rows(3))
    path = tmp_path / "catalogue.csv"
    path.write_text(
        "title,description,sku,image\n"
        "Good,ok,U-1,images/astronaut-eileen-collins.jpg\n"
        'Open quote,"never closed,U-2,images/grace-hopper.jpg\n'
        "Swallowed,ok,U-3,images/cameraman.jpg\n"
    )

    report = import_catalog(path=path)

    assert report.problems == ["line 3: unclosed quote: lines 3-4 were read as one row (unexpected end of data)"]
    assert Item.objects.get().sku == "U-1"


def test_a_stray_quote_fails_its_row_and_the_next_rows_land(db, data_dir, tmp_path):
    write_catalogue(tmp_path, demo_rows(2))
    path = tmp_path / "catalogue.csv"
    path.write_text(
        'title,sku,image\n"Stray" quote,S-1,images/astronaut-eileen-collins.jpg\nGood,S-2,images/grace-hopper.jpg\n'
    )

    report = import_catalog(path=path)

    assert len(report.problems) == 1 and report.problems[0].startswith("line 2: a quote is misplaced")
    assert Item.objects.get().sku == "S-2"


def test_an_image_path_too_long_for_the_file_system_fails_its_row(db, data_dir, tmp_path):
    write_catalogue(tmp_path, demo_rows(1))
    lines = [
        {"title": "Long path", "image": "a" * 300 + ".jpg"},
        {"title": "Good", "image": demo_rows(1)[0]["image"]},
    ]

    report = import_catalog(path=write_jsonl(tmp_path, lines))

    assert report.failed == 1 and report.problems[0].endswith(".jpg cannot be read (File name too long)")
    assert Item.objects.get().title == "Good"


def test_an_image_that_is_a_symlink_loop_fails_its_row(db, data_dir, tmp_path):
    write_catalogue(tmp_path, demo_rows(1))
    (tmp_path / "loop-a.jpg").symlink_to(tmp_path / "loop-b.jpg")
    (tmp_path / "loop-b.jpg").symlink_to(tmp_path / "loop-a.jpg")

    report = import_catalog(path=write_jsonl(tmp_path, [{"title": "Loop", "image": "loop-a.jpg"}]))

    assert report.problems == ["line 1: image loop-a.jpg not found"]


def test_an_image_url_that_does_not_parse_fails_its_row(db, data_dir, tmp_path):
    rows = demo_rows(1)
    rows[0]["image"] = "http://[bad/cat.jpg"

    report = import_catalog(path=write_catalogue(tmp_path, rows))

    assert report.problems == ["line 2: image http://[bad/cat.jpg: The URL is not valid."]


def test_a_second_row_with_the_same_sku_is_refused_and_reimports_change_nothing(db, data_dir, tmp_path):
    rows = demo_rows(2)
    rows[1]["sku"] = rows[0]["sku"]
    path = write_catalogue(tmp_path, rows)

    first = import_catalog(path=path)
    images = list(ItemImage.objects.values_list("id", "sha256"))
    again = import_catalog(path=path)

    assert first.problems == again.problems == ["line 3: SKU DEMO-001 is already on line 2"]
    assert (again.created, again.updated, again.skipped, again.failed) == (0, 0, 1, 1)
    assert Item.objects.get().title == rows[0]["title"]
    assert list(ItemImage.objects.values_list("id", "sha256")) == images


def test_a_second_row_without_sku_for_the_same_photo_is_refused(db, data_dir, tmp_path):
    rows = demo_rows(2)
    for row in rows:
        row["sku"] = ""
    rows[1]["image"] = rows[0]["image"]

    report = import_catalog(path=write_catalogue(tmp_path, rows))

    assert report.problems == ["line 3: the same item as line 2 (the same first image, and no SKU to tell them apart)"]
    assert Item.objects.get().title == rows[0]["title"]


def test_over_long_skus_and_categories_fail_their_row_instead_of_being_cut(db, data_dir, tmp_path):
    rows = demo_rows(3)
    rows[0]["sku"] = "S" * 100 + "A"
    rows[1]["sku"] = "S" * 100 + "B"
    rows[2]["category"] = "C" * 101

    report = import_catalog(path=write_catalogue(tmp_path, rows))

    assert report.problems == [
        "line 2: sku is longer than 100 characters",
        "line 3: sku is longer than 100 characters",
        "line 4: category is longer than 100 characters",
    ]
    assert not Item.objects.exists()


def test_a_column_named_twice_stops_the_import(db, data_dir, tmp_path):
    write_catalogue(tmp_path, demo_rows(1))
    path = tmp_path / "catalogue.csv"
    path.write_text("title,Title,image\nA,B,images/astronaut-eileen-collins.jpg\n")

    with pytest.raises(CommandError, match="the header names the column title twice"):
        call_command("import_catalog", str(path))

    assert not Item.objects.exists()


def test_columns_and_keys_are_matched_in_any_case(db, data_dir, tmp_path):
    rows = [{key.upper(): value for key, value in row.items()} for row in demo_rows(2)]
    for row in rows:
        row["image"] = row.pop("IMAGE")
    write_catalogue(tmp_path, rows)
    jsonl = write_jsonl(tmp_path, [{"Title": "Capital key", "SKU": "J-1", "Image": rows[0]["image"]}])

    csv_report = import_catalog(path=tmp_path / "catalogue.csv")
    jsonl_report = import_catalog(path=jsonl)

    assert (csv_report.created, jsonl_report.created) == (2, 1)
    assert Item.objects.get(sku="DEMO-001").category == "People"
    assert Item.objects.get(sku="J-1").title == "Capital key"


@pytest.mark.parametrize("separator", [";", "\t"], ids=["semicolons (Excel in most of Europe)", "tabs"])
def test_a_csv_separated_by_semicolons_or_tabs_is_read_as_such(db, data_dir, tmp_path, separator):
    write_catalogue(tmp_path, demo_rows(2))
    lines = (tmp_path / "catalogue.csv").read_text(encoding="utf-8").splitlines()
    rows = [next(csv.reader([line])) for line in lines]
    price = rows[0].index("price")
    rows[1][price] = rows[1][price].replace(".", ",")  # a decimal comma, as such files have
    (tmp_path / "catalogue.csv").write_text("\n".join(separator.join(row) for row in rows), encoding="utf-8")

    report = import_catalog(path=tmp_path / "catalogue.csv")

    assert report.created == 2, report.problems
    first = demo_rows(1)[0]
    assert Item.objects.get(sku=first["sku"]).price == Decimal(first["price"])


def test_jsonl_values_of_the_wrong_type_fail_their_row(db, data_dir, tmp_path):
    write_catalogue(tmp_path, demo_rows(1))
    image = demo_rows(1)[0]["image"]
    lines = [
        {"title": ["list", "title"], "image": image},
        {"title": "Object image", "image": {"a": 1}},
        {"title": "Number images", "image": [1, 2]},
        {"title": "List price", "price": [1], "image": image},
        {"title": "Listed active", "active": [True], "image": image},
        {"title": "Title", "TITLE": "Twice", "image": image},
        "[" * 100_000 + "]" * 100_000,
        {"title": "Numbers and booleans", "sku": 12345, "price": 12.50, "active": False, "image": image},
    ]

    report = import_catalog(path=write_jsonl(tmp_path, lines))

    assert report.problems == [
        "line 1: title must be a string",
        "line 2: image must be a string or a list of strings",
        "line 3: image must be a string or a list of strings",
        "line 4: price must be a number",
        "line 5: active must be true or false",
        "line 6: the key title is given twice (keys are not case-sensitive)",
        "line 7: not valid JSON (nested too deeply)",
    ]
    item = Item.objects.get()
    assert (item.sku, str(item.price), item.active) == ("12345", "12.50", False)


def test_a_currency_must_be_three_ascii_letters(db, data_dir, tmp_path):
    rows = demo_rows(3)
    rows[0]["currency"] = "ÄÖÜ"
    rows[1]["currency"] = "€"
    rows[2]["currency"] = "chf"

    report = import_catalog(path=write_catalogue(tmp_path, rows))

    assert report.problems == [
        "line 2: currency 'ÄÖÜ' is not a three-letter code such as EUR",
        "line 3: currency '€' is not a three-letter code such as EUR",
    ]
    assert Item.objects.get().currency == "CHF"


def test_text_that_is_not_valid_unicode_fails_its_row(db, data_dir, tmp_path):
    write_catalogue(tmp_path, demo_rows(1))
    path = tmp_path / "items.jsonl"
    path.write_text('{"title": "Lone \\ud800 surrogate", "image": "images/astronaut-eileen-collins.jpg"}\n')

    report = import_catalog(path=path)

    assert report.problems == ["line 1: the row contains characters that are not valid Unicode"]


def test_a_folder_image_whose_name_is_not_utf8_fails_its_row(db, data_dir, tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(DEMO_DIR / "images" / "espresso-cup.jpg", folder / os.fsdecode(b"caf\xe9.jpg"))
    shutil.copy(DEMO_DIR / "images" / "chelsea-cat.jpg", folder / "chelsea-cat.jpg")

    call_command("import_catalog", str(folder))

    out, err = capsys.readouterr()
    assert "created 1, updated 0, skipped 0, failed 1" in out
    assert "skipped file caf\ufffd.jpg: the row contains characters that are not valid Unicode" in err
