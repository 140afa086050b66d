"""import_catalog: a folder of images, or a CSV / JSONL file of items, into the catalogue."""

import csv
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
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


class CatalogueFileError(ValueError):
    """The whole file cannot be read (wrong type, missing header); nothing was imported."""


class RowError(ValueError):
    pass


@dataclass
class Row:
    where: str  # "line 7" or "file photos/cat.jpg": what the admin needs to find the bad row
    values: dict[str, str]
    base_dir: Path


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
    for row in iter_wrapper(read_rows(path)):
        try:
            outcome = import_row(row, delay=delay)
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
        yield from _csv_rows(path)
    elif path.suffix.lower() in (".jsonl", ".ndjson"):
        yield from _jsonl_rows(path)
    else:
        raise CatalogueFileError(f"{path.name}: expected a folder of images, a .csv or a .jsonl file.")


def _folder_rows(folder: Path) -> Iterator[Row]:
    for file in sorted(folder.rglob("*")):
        if file.is_file() and file.suffix.lower() in IMAGE_SUFFIXES and not file.name.startswith("."):
            relative = file.relative_to(folder)
            title = file.stem.replace("_", " ").replace("-", " ").strip().capitalize()
            category = relative.parts[0] if len(relative.parts) > 1 else ""
            yield Row(
                where=f"file {relative}",
                values={"title": title, "category": category, "image": str(relative)},
                base_dir=folder,
            )


def _csv_rows(path: Path) -> Iterator[Row]:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        header = [name.strip().lower() for name in reader.fieldnames or []]
        if "title" not in header or "image" not in header:
            raise CatalogueFileError(f"{path.name}: the header must name at least the columns title and image.")
        reader.fieldnames = header
        for values in reader:
            # reader.line_num is the physical line the row ended on, which is what an editor shows.
            if None in values:
                yield Row(
                    f"line {reader.line_num}", {"__error__": "the row has more fields than the header"}, path.parent
                )
                continue
            yield Row(f"line {reader.line_num}", {k: (v or "").strip() for k, v in values.items()}, path.parent)


def _jsonl_rows(path: Path) -> Iterator[Row]:
    with path.open(encoding="utf-8-sig") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                values = json.loads(line)
            except json.JSONDecodeError as error:
                yield Row(f"line {number}", {"__error__": f"not valid JSON ({error.msg})"}, path.parent)
                continue
            if not isinstance(values, dict):
                yield Row(f"line {number}", {"__error__": "each line must be a JSON object"}, path.parent)
                continue
            if isinstance(values.get("image"), list):
                values["image"] = "|".join(str(part) for part in values["image"])
            if isinstance(values.get("tags"), list):
                values["tags"] = "|".join(str(part) for part in values["tags"])
            yield Row(
                f"line {number}", {k: "" if v is None else str(v).strip() for k, v in values.items()}, path.parent
            )


def clean_fields(values: dict[str, str]) -> dict[str, object]:
    if "__error__" in values:
        raise RowError(values["__error__"])
    if any("\x00" in value for value in values.values()):
        raise RowError("the row contains a NUL character")
    title = values.get("title", "")
    if not title:
        raise RowError("title is empty")
    if len(title) > 300:
        raise RowError("title is longer than 300 characters")
    price = None
    if values.get("price"):
        try:
            price = Decimal(values["price"].replace(",", "."))
        except InvalidOperation:
            raise RowError(f"price {values['price']!r} is not a number") from None
        if not price.is_finite() or price < 0 or price >= Decimal("1e10"):
            raise RowError(f"price {values['price']!r} is out of range")
        price = price.quantize(Decimal("0.01"))
    currency = values.get("currency", "").upper()
    if currency and (len(currency) != 3 or not currency.isalpha()):
        raise RowError(f"currency {values['currency']!r} is not a three-letter code such as EUR")
    url = values.get("url", "")
    if len(url) > 1000:
        raise RowError("url is longer than 1000 characters")
    if url:
        try:
            URLValidator(schemes=["http", "https"])(url)
        except ValidationError:
            raise RowError(f"url {url!r} is not an http(s) URL") from None
    active = values.get("active", "").lower()
    if active not in ("", "true", "false", "1", "0", "yes", "no"):
        raise RowError(f"active {values['active']!r} must be true or false")
    tags = [tag.strip() for tag in values.get("tags", "").replace("|", ",").split(",") if tag.strip()]
    if len(", ".join(tags)) > 500:
        raise RowError("tags are longer than 500 characters in all")
    return {
        "title": title,
        "description": values.get("description", ""),
        "category": values.get("category", "")[:100],
        "price": price,
        "currency": currency,
        "url": url,
        "sku": values.get("sku", "")[:100] or None,
        "tags": ", ".join(tags),
        "active": active not in ("false", "0", "no"),
    }


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
    file = (base_dir / reference).resolve()
    if not file.is_relative_to(base_dir.resolve()):
        raise RowError(f"image {reference}: must be a path inside {base_dir}")
    if not file.is_file():
        raise RowError(f"image {reference} not found")
    if file.stat().st_size > settings.MEEPO_FETCH_MAX_BYTES:
        raise RowError(f"image {reference} is larger than the {settings.MEEPO_FETCH_MAX_BYTES:,}-byte limit")
    return file.read_bytes(), ""


def import_row(row: Row, *, delay: PoliteDelay) -> str:
    """Create or update one item; returns "created", "updated" or "skipped" (unchanged)."""
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
            return "created"
        # Only what the row gives: a folder import has no price, and must not wipe the CSV's.
        given = [name for name in ITEM_FIELDS if name in row.values and not (name == "sku" and not fields["sku"])]
        changed = [name for name in given if getattr(item, name) != fields[name]]
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
