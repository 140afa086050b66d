from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from catalog.models import ItemImage

T = TypeVar("T")


def prefetched(batches: list[list[int]], load: Callable[[list[ItemImage]], T], pool: ThreadPoolExecutor) -> Iterator[T]:
    """Yield load(images) for each batch of ids while the next batch loads in the background
    (overlaps file reads, and on a GPU decoding too, with the forward pass)."""
    pending = None
    for ids in batches:
        # Rows are read here: database connections belong to this thread.
        images = list(ItemImage.objects.filter(id__in=ids).order_by("id"))
        future = pool.submit(load, images)
        if pending is not None:
            yield pending.result()
        pending = future
    if pending is not None:
        yield pending.result()


def read_files(images: list[ItemImage], *, reader: ThreadPoolExecutor | None = None):
    """(images, each one's bytes or why they could not be read), read in the reader's threads if given."""
    return images, list(reader.map(_read, images) if reader else map(_read, images))


class Unreadable(str):
    """Why an image's file could not be read. Unlike bytes that do not decode, this may pass (files
    imported as root before a chown, a storage mount not up yet): the image is tried again next run."""


def _read(image: ItemImage) -> bytes | str:
    try:
        return image.read_bytes()
    except (OSError, ValueError) as error:
        return Unreadable(f"the file could not be read ({error.__class__.__name__}); tried again on the next run")
