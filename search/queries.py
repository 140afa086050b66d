"""Turning what a shopper sends (an uploaded file, a photo URL) into an image to search with.

Query photos are decoded in memory and never stored.
"""

from django.conf import settings
from PIL import Image

from catalog.fetching import FetchRefused, fetch_image
from catalog.images import MAX_ASPECT_RATIO, ImageRejected, load_rgb, too_thin
from pipeline.encoder import get_encoder

MIN_BOX_SIDE = 16
# Clean-up works on at most this many pixels on the long side, the model's input a few times over:
# on a whole 6000-pixel-square photo remove_text and enhance took 4.8 s of CPU, a denial of service.
CLEANUP_SIDE = 1024


class QueryRejected(ValueError):
    """The query cannot be used; the message is shown to the shopper as it is."""


def parse_box(text: str | None) -> tuple[int, int, int, int] | None:
    """ "x,y,w,h" in the query photo's pixels, or None when no box was given."""
    if text is None or not text.strip():
        return None
    try:
        x, y, w, h = (_pixels(part) for part in text.split(","))
    except (ValueError, OverflowError):
        raise QueryRejected("box must be four numbers x,y,w,h in the photo's pixels.") from None
    return x, y, w, h


def _pixels(part: str) -> int:
    try:
        return int(part)  # exact, however large: a float would round it
    except ValueError:
        return round(float(part))  # the box tool may send fractions of a pixel


def draft_size_for(
    box: tuple[int, int, int, int] | None, *, remove_text: bool, enhance: bool
) -> tuple[int, int] | None:
    """How finely to decode a JPEG query photo: in full when a box will be cut from it (the box is in
    the photo's full pixels), as finely as clean-up needs, or as the model needs."""
    if box is not None:
        return None
    if remove_text or enhance:
        return CLEANUP_SIDE, CLEANUP_SIDE
    return get_encoder().draft_size


def prepare(image, *, box=None, remove_text: bool = False, enhance: bool = False):
    """Cut out the box the shopper drew, then apply their clean-up choices to what is left."""
    from search import cleanup

    if box is not None:
        x, y, w, h = box
        if w < MIN_BOX_SIDE or h < MIN_BOX_SIDE:
            raise QueryRejected(f"The box must be at least {MIN_BOX_SIDE} pixels on each side.")
        if too_thin(w, h):
            raise QueryRejected(f"The box must be at most {MAX_ASPECT_RATIO} times as long as it is wide.")
        if x < 0 or y < 0 or x + w > image.width or y + h > image.height:
            raise QueryRejected(f"The box must lie inside the photo ({image.width}×{image.height} pixels).")
        image = image.crop((x, y, x + w, y + h))
    if remove_text or enhance:
        image = _at_most(image, CLEANUP_SIDE)
    if remove_text:
        image = cleanup.remove_text(image)
    if enhance:
        image = cleanup.enhance(image)
    return image


def _at_most(image, side: int):
    scale = side / max(image.size)
    if scale >= 1:
        return image
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.BICUBIC, reducing_gap=2.0)


def image_from_upload(upload, *, draft_size: tuple[int, int] | None = None) -> Image.Image:
    """draft_size: decode a JPEG only this finely (draft_size_for says how finely a search needs)."""
    if upload is None:
        raise QueryRejected("Choose a photo to search with.")
    if upload.size > settings.MEEPO_MAX_UPLOAD_BYTES:
        raise QueryRejected(f"The photo is larger than {settings.MEEPO_MAX_UPLOAD_BYTES // (1024 * 1024)} MB.")
    return _decode(upload.read(), draft_size)


def image_from_url(url: str, *, draft_size: tuple[int, int] | None = None) -> Image.Image:
    url = (url or "").strip()
    if not url:
        raise QueryRejected("Give the URL of a photo.")
    try:
        fetched = fetch_image(url, max_bytes=settings.MEEPO_MAX_UPLOAD_BYTES)
    except FetchRefused as error:
        raise QueryRejected(str(error)) from None
    return _decode(fetched.content, draft_size)


def _decode(data: bytes, draft_size: tuple[int, int] | None):
    try:
        return load_rgb(data, max_pixels=settings.MEEPO_MAX_IMAGE_PIXELS, draft_size=draft_size)
    except ImageRejected as error:
        raise QueryRejected(str(error)) from None
