"""Turning what a shopper sends (an uploaded file, a photo URL) into an image to search with.

Query photos are decoded in memory and never stored.
"""

from django.conf import settings

from catalog.fetching import FetchRefused, fetch_image
from catalog.images import MAX_ASPECT_RATIO, ImageRejected, load_rgb, too_thin

MIN_BOX_SIDE = 16


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


def prepare(image, *, box=None, remove_text: bool = False, enhance: bool = False):
    """Apply the shopper's clean-up choices, then cut out the box they drew."""
    from search import cleanup

    if box is not None:
        x, y, w, h = box
        if w < MIN_BOX_SIDE or h < MIN_BOX_SIDE:
            raise QueryRejected(f"The box must be at least {MIN_BOX_SIDE} pixels on each side.")
        if too_thin(w, h):
            raise QueryRejected(f"The box must be at most {MAX_ASPECT_RATIO} times as long as it is wide.")
        if x < 0 or y < 0 or x + w > image.width or y + h > image.height:
            raise QueryRejected(f"The box must lie inside the photo ({image.width}×{image.height} pixels).")
    if remove_text:
        image = cleanup.remove_text(image)
    if enhance:
        image = cleanup.enhance(image)
    if box is not None:
        image = image.crop((x, y, x + w, y + h))
    return image


def image_from_upload(upload, *, draft_size: tuple[int, int] | None = None) -> "Image.Image":  # noqa: F821
    """draft_size: decode a JPEG only as finely as the model needs (not when a box will be cut)."""
    if upload is None:
        raise QueryRejected("Choose a photo to search with.")
    if upload.size > settings.MEEPO_MAX_UPLOAD_BYTES:
        raise QueryRejected(f"The photo is larger than {settings.MEEPO_MAX_UPLOAD_BYTES // (1024 * 1024)} MB.")
    return _decode(upload.read(), draft_size)


def image_from_url(url: str, *, draft_size: tuple[int, int] | None = None) -> "Image.Image":  # noqa: F821
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
