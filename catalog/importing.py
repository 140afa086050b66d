"""import_catalog: a folder of images, or a CSV / JSONL file of items, into the catalogue."""

import csv
import json
import os
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from itertools import zip_longest
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.db import transaction

from catalog.fetching import FetchRefused, PoliteDelay, fetch_image
from catalog.images import ImageRejected
from catalog.models import Item, ItemImage

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
ITEM_FIELDS = ("title", "description", "category", "price", "currency", "url", "sku", "tags", "active")
LIST_FIELDS = ("image", "tags")  # the columns that JSONL may give as lists
EXPECTED_JSON = {
    "image": "a string or a list of strings",
    "tags": "a string or a list of strings",
    "price": "a number",
    "active": "true or false",
}
# SQLite does not enforce max_length: a longer value would be stored whole, or cut by another database.
MAX_LENGTHS = {name: Item._meta.get_field(name).max_length for name in ("title", "category", "url", "sku")}
MAX_LENGTHS["description"] = 10_000  # a page, not a document; 2 MB descriptions went in before
# Item.price holds 12 digits, 2 after the point: from .995 on, rounding to cents would make 13, which
# every page showing the item then fails to read back.
PRICE_LIMIT = Decimal("9999999999.995")


class CatalogueFileError(ValueError):
    """The whole file cannot be read (wrong type, missing header); nothing was imported."""


class RowError(ValueError):
    pass


@dataclass
class Row:
    where: str  # "line 7" or "file photos/cat.jpg": what the admin needs to find the bad row
    values: dict[str, str]
    base_dir: Path
    problem: str = ""  # why the reader could not make a row of it
    # A file name is no match for a title and category curated through a CSV: folder rows only
    # create items, and leave an item that already has their image as it is.
    updates_existing: bool = True


@dataclass
class ImportReport:
    created: int = 0
    updated: int = 0
    skipped: int = 0
    failed: int = 0
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return f"created {self.created}, updated {self.updated}, skipped {self.skipped}, failed {self.failed}"


def import_catalog(
    *,
    path: Path,
    on_problem: Callable[[str], None] = lambda message: None,
    iter_wrapper: Callable[[Iterator[Row]], Iterator[Row]] = lambda rows: rows,
) -> ImportReport:
    report = ImportReport()
    delay = PoliteDelay(settings.MEEPO_FETCH_HOST_DELAY)
    written: dict[int, str] = {}
    for row in iter_wrapper(read_rows(path)):
        try:
            outcome = import_row(row, delay=delay, written=written)
        except RowError as error:
            report.failed += 1
            message = f"{row.where}: {error}"
            report.problems.append(message)
            on_problem(message)
            continue
        setattr(report, outcome, getattr(report, outcome) + 1)
    return report


def read_rows(path: Path) -> Iterator[Row]:
    if path.is_dir():
        yield from _folder_rows(path)
    elif not path.is_file():
        raise CatalogueFileError(f"{path} does not exist.")
    elif path.suffix.lower() == ".csv":
        _refuse_unless_utf8(path)
        yield from _csv_rows(path)
    elif path.suffix.lower() in (".jsonl", ".ndjson"):
        _refuse_unless_utf8(path)
        yield from _jsonl_rows(path)
    else:
        raise CatalogueFileError(f"{path.name}: expected a folder of images, a .csv or a .jsonl file.")


def _refuse_unless_utf8(path: Path) -> None:
    """Checked before the first row: a file in another encoding would otherwise stop half-imported."""
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                raise CatalogueFileError(
                    f"{path.name}, line {number}: the file is not UTF-8 text. Save it as UTF-8 "
                    "(in Excel: CSV UTF-8) and import it again; nothing was imported."
                ) from None


def _folder_rows(folder: Path) -> Iterator[Row]:
    for file in sorted(folder.rglob("*")):
        if file.is_file() and file.suffix.lower() in IMAGE_SUFFIXES and not file.name.startswith("."):
            relative = file.relative_to(folder)
            title = file.stem.replace("_", " ").replace("-", " ").strip().capitalize()
            category = relative.parts[0] if len(relative.parts) > 1 else ""
            yield Row(
                # A file name that is not UTF-8 fails its row, and must still print in the report.
                where=f"file {os.fsencode(relative).decode('utf-8', 'replace')}",
                values={"title": title, "category": category, "image": str(relative)},
                base_dir=folder,
                updates_existing=False,
            )


def _csv_rows(path: Path) -> Iterator[Row]:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        # strict: a quote left open ends in an error instead of a row that swallows the rest of the file.
        reader = csv.reader(handle, strict=True, delimiter=_separator(handle.readline()))
        handle.seek(0)
        header = _csv_header(path, reader)
        while True:
            first_line = reader.line_num + 1
            where = f"line {first_line}"
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as error:
                yield Row(where, {}, path.parent, problem=_csv_problem(error, first_line, reader.line_num))
                continue
            if not cells:
                continue  # a blank line
            if len(cells) > len(header):
                yield Row(where, {}, path.parent, problem="the row has more fields than the header")
                continue
            values = {name: cell.strip() for name, cell in zip_longest(header, cells, fillvalue="")}
            yield Row(where, values, path.parent)


def _separator(header_line: str) -> str:
    """Commas, or what the header is separated by: Excel writes semicolons where the decimal point is
    a comma (most of Europe), and tab-separated exports are common too."""
    names = {"title", "image"}
    for separator in (",", ";", "\t"):
        if names <= {name.strip().strip('"').lower() for name in header_line.split(separator)}:
            return separator
    return ","


def _csv_header(path: Path, reader) -> list[str]:
    try:
        header = [name.strip().lower() for name in next(reader, [])]
    except csv.Error as error:
        raise CatalogueFileError(f"{path.name}, line 1: the header cannot be read ({error}).") from None
    twice = [name for name, count in Counter(header).items() if name and count > 1]
    if twice:
        raise CatalogueFileError(f"{path.name}: the header names the column {twice[0]} twice; nothing was imported.")
    if "title" not in header or "image" not in header:
        raise CatalogueFileError(f"{path.name}: the header must name at least the columns title and image.")
    return header


def _csv_problem(error: csv.Error, first_line: int, last_line: int) -> str:
    if last_line > first_line:
        return f"unclosed quote: lines {first_line}-{last_line} were read as one row ({error})"
    if "field limit" in str(error):  # _csv raises one exception class for everything
        return f"a field is longer than {csv.field_size_limit():,} characters"
    return f"a quote is misplaced ({error})"


def _jsonl_rows(path: Path) -> Iterator[Row]:
    with path.open(encoding="utf-8-sig") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                values = _jsonl_values(line)
            except RowError as error:
                yield Row(f"line {number}", {}, path.parent, problem=str(error))
                continue
            yield Row(f"line {number}", values, path.parent)


def _jsonl_values(line: str) -> dict[str, str]:
    """One JSON object as the text that a CSV row would hold; keys, like CSV headers, in any case."""
    try:
        # Numbers as Decimal: a price is not rounded through a float, and no number is too long.
        data = json.loads(line, parse_float=Decimal, parse_int=Decimal, parse_constant=Decimal)
    except json.JSONDecodeError as error:
        raise RowError(f"not valid JSON ({error.msg})") from None
    except RecursionError:
        raise RowError("not valid JSON (nested too deeply)") from None
    if not isinstance(data, dict):
        raise RowError("each line must be a JSON object")
    values = {}
    for key, value in data.items():
        name = key.strip().lower()
        if name not in (*ITEM_FIELDS, "image"):
            continue
        if name in values:
            raise RowError(f"the key {name} is given twice (keys are not case-sensitive)")
        values[name] = _jsonl_text(name, value)
    return values


def _jsonl_text(name: str, value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, Decimal):  # a price, or a numeric SKU as a shop's export writes it
        return str(value)
    if isinstance(value, bool) and name == "active":
        return str(value).lower()
    if isinstance(value, list) and name in LIST_FIELDS and all(isinstance(part, str) for part in value):
        return "|".join(part.strip() for part in value)
    raise RowError(f"{name} must be {EXPECTED_JSON.get(name, 'a string')}")


def clean_fields(values: dict[str, str]) -> dict[str, object]:
    text = "".join(values.values())
    if "\x00" in text:
        raise RowError("the row contains a NUL character")
    if not _is_utf8(text):
        raise RowError("the row contains characters that are not valid Unicode")
    title = values.get("title", "")
    if not title:
        raise RowError("title is empty")
    for name, limit in MAX_LENGTHS.items():
        if len(values.get(name, "")) > limit:
            raise RowError(f"{name} is longer than {limit} characters")
    currency = values.get("currency", "")
    if currency and not (len(currency) == 3 and currency.isascii() and currency.isalpha()):
        raise RowError(f"currency {_shown(currency)} is not a three-letter code such as EUR")
    url = values.get("url", "")
    if url:
        try:
            URLValidator(schemes=["http", "https"])(url)
        except ValidationError:
            raise RowError(f"url {_shown(url)} is not an http(s) URL") from None
    active = values.get("active", "").lower()
    if active not in ("", "true", "false", "1", "0", "yes", "no"):
        raise RowError(f"active {_shown(values['active'])} must be true or false")
    tags = [tag.strip() for tag in values.get("tags", "").replace("|", ",").split(",") if tag.strip()]
    if len(", ".join(tags)) > 500:
        raise RowError("tags are longer than 500 characters in all")
    return {
        "title": title,
        "description": values.get("description", ""),
        "category": values.get("category", ""),
        "price": _clean_price(values.get("price", "")),
        "currency": currency.upper(),
        "url": url,
        "sku": values.get("sku") or None,
        "tags": ", ".join(tags),
        "active": active not in ("false", "0", "no"),
    }


def _shown(value: str, limit: int = 60) -> str:
    """A bad value as the report quotes it: a 5,000-digit price would fill the admin's screen."""
    return repr(value if len(value) <= limit else value[:limit] + "…")


def _is_utf8(text: str) -> bool:
    """False for lone surrogates: a JSON "\\ud800", or a file name in another encoding."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _clean_price(text: str) -> Decimal | None:
    if not text:
        return None
    try:
        price = Decimal(text.replace(",", "."))
    except InvalidOperation:
        raise RowError(f"price {_shown(text)} is not a number") from None
    # Checked before rounding to cents, which fails on numbers of more than 28 digits.
    if not price.is_finite() or price.is_signed() or price >= PRICE_LIMIT:
        raise RowError(f"price {_shown(text)} is out of range")
    return price.quantize(Decimal("0.01"))


def load_image_bytes(reference: str, *, base_dir: Path, delay: PoliteDelay) -> tuple[bytes, str]:
    """Return (bytes, source URL or "") for one entry of the image column."""
    if reference.lower().startswith(("http://", "https://")):
        delay.wait(reference)
        try:
            return fetch_image(reference).content, reference
        except FetchRefused as error:
            raise RowError(f"image {reference}: {error}") from None
    if "://" in reference:
        raise RowError(f"image {reference}: only http(s) URLs and paths relative to the file are allowed")
    try:
        # os.path.realpath: Path.resolve() raises RuntimeError on a symlink loop.
        file = Path(os.path.realpath(base_dir / reference))
        if not file.is_relative_to(base_dir.resolve()):
            raise RowError(f"image {reference}: must be a path inside {base_dir}")
        if not file.is_file():
            raise RowError(f"image {reference} not found")
        if file.stat().st_size > settings.MEEPO_FETCH_MAX_BYTES:
            raise RowError(f"image {reference} is larger than the {settings.MEEPO_FETCH_MAX_BYTES:,}-byte limit")
        return file.read_bytes(), ""
    except OSError as error:  # a name too long, a folder that cannot be read...
        raise RowError(f"image {reference} cannot be read ({error.strerror or error})") from None


def import_row(row: Row, *, delay: PoliteDelay, written: dict[int, str]) -> str:
    """Create or update one item; returns "created", "updated" or "skipped" (unchanged).

    `written` maps the items that earlier rows of this import wrote to those rows: a second row for
    the same item would overwrite the first on every run, and re-embed its images each time.
    """
    if row.problem:
        raise RowError(row.problem)
    fields = clean_fields(row.values)
    references = [part.strip() for part in row.values.get("image", "").split("|") if part.strip()]
    if not references:
        raise RowError("image is empty")
    images = []
    for reference in references:
        data, source_url = load_image_bytes(reference, base_dir=row.base_dir, delay=delay)
        image = ItemImage(source_url=source_url)
        try:
            # Files are content-addressed, so storing them before the transaction cannot leave a
            # half-imported item, only an unreferenced file at worst.
            image.attach(data)
        except ImageRejected as error:
            raise RowError(f"image {reference}: {error}") from None
        if all(other.sha256 != image.sha256 for other in images):
            images.append(image)

    with transaction.atomic():
        item = _find_item(sku=fields["sku"], first_sha256=images[0].sha256)
        if item is None:
            item = Item.objects.create(**fields)
            _replace_images(item, images)
            outcome = "created"
        elif item.pk in written:
            raise RowError(_duplicate_problem(item, fields["sku"], written[item.pk]))
        elif not row.updates_existing:
            outcome = "skipped"
        else:
            outcome = _update_item(item, fields, images, given=row.values)
    written[item.pk] = row.where
    return outcome


def _duplicate_problem(item: Item, sku: str | None, earlier: str) -> str:
    if sku and item.sku == sku:
        return f"SKU {sku} is already on {earlier}"
    return f"the same item as {earlier} (the same first image, and no SKU to tell them apart)"


def _update_item(item: Item, fields: dict[str, object], images: list[ItemImage], *, given: dict[str, str]) -> str:
    # Only what the row gives: a CSV without a price column must not wipe the prices.
    names = [name for name in ITEM_FIELDS if name in given and not (name == "sku" and not fields["sku"])]
    changed = [name for name in names if getattr(item, name) != fields[name]]
    for name in changed:
        setattr(item, name, fields[name])
    if changed:
        item.save()
    images_changed = _replace_images(item, images)
    return "updated" if changed or images_changed else "skipped"


def _find_item(*, sku: str | None, first_sha256: str) -> Item | None:
    if sku:
        item = Item.objects.select_for_update().filter(sku=sku).first()
        if item:
            return item
    match = ItemImage.objects.filter(sha256=first_sha256).select_related("item").order_by("id").first()
    if match and (not sku or not match.item.sku):
        return match.item
    return None


def _replace_images(item: Item, images: list[ItemImage]) -> bool:
    """Make the item's images exactly `images`, keeping rows (and their embeddings) whose bytes are
    unchanged. Returns whether anything changed."""
    existing = {image.sha256: image for image in item.images.all()}
    wanted = [image.sha256 for image in images]
    changed = False
    for sha256, image in existing.items():
        if sha256 not in wanted:
            image.delete()
            changed = True
    for position, image in enumerate(images):
        kept = existing.get(image.sha256)
        if kept is None:
            image.item = item
            image.position = position
            image.save()
            changed = True
        elif kept.position != position or kept.source_url != image.source_url:
            kept.position, kept.source_url = position, image.source_url
            kept.save(update_fields=["position", "source_url"])
            changed = True
    return changed
