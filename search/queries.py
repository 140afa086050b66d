"""Turning what a shopper sends (an uploaded file, a photo URL) into an image to search with.

Query photos are decoded in memory and never stored.
"""

import math

from django.conf import settings
from PIL import Image

from catalog.fetching import FetchRefused, fetch_image
from catalog.images import MAX_ASPECT_RATIO, ImageRejected, load_rgb, too_thin, upright_size
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


def least_size_for(*, remove_text: bool, enhance: bool) -> tuple[int, int]:
    """How finely what is searched with (the photo, or the part in its box) must be decoded: as
    finely as clean-up needs, or as the model needs."""
    if remove_text or enhance:
        return CLEANUP_SIDE, CLEANUP_SIDE
    return get_encoder().draft_size


def query_image(data: bytes, *, box=None, remove_text: bool = False, enhance: bool = False) -> Image.Image:
    """What a search looks for: the photo, or the part in the box the shopper drew, decoded only as
    finely as the search needs (JPEG draft mode), then cleaned up as they chose."""
    least = least_size_for(remove_text=remove_text, enhance=enhance)
    image = _decode(data, least) if box is None else _part(data, box, least)
    if remove_text or enhance:
        from search import cleanup

        image = _at_most(image, CLEANUP_SIDE)
        if remove_text:
            image = cleanup.remove_text(image)
        if enhance:
            image = cleanup.enhance(image)
    return image


def _part(data: bytes, box: tuple[int, int, int, int], least: tuple[int, int]) -> Image.Image:
    """The box (in the photo's full pixels) cut from a decode just fine enough for it: a box on a
    12-megapixel phone photo decoded 87 ms in full, 27-33 ms at a half or a quarter."""
    try:
        width, height = upright_size(data, max_pixels=settings.MEEPO_MAX_IMAGE_PIXELS)
    except ImageRejected as error:
        raise QueryRejected(str(error)) from None
    _check_box(box, width, height)
    x, y, w, h = box
    scale = min(1.0, max(least) / min(w, h))
    # A square draft size: JPEG decoding then keeps at least `scale` of both sides, turned or not.
    side = math.ceil(min(width, height) * scale)
    photo = _decode(data, (side, side))
    across, down = photo.width / width, photo.height / height
    return photo.crop((round(x * across), round(y * down), round((x + w) * across), round((y + h) * down)))


def _check_box(box: tuple[int, int, int, int], width: int, height: int) -> None:
    x, y, w, h = box
    if w < MIN_BOX_SIDE or h < MIN_BOX_SIDE:
        raise QueryRejected(f"The box must be at least {MIN_BOX_SIDE} pixels on each side.")
    if too_thin(w, h):
        raise QueryRejected(f"The box must be at most {MAX_ASPECT_RATIO} times as long as it is wide.")
    if x < 0 or y < 0 or x + w > width or y + h > height:
        raise QueryRejected(f"The box must lie inside the photo ({width}×{height} pixels).")


def _at_most(image, side: int):
    scale = side / max(image.size)
    if scale >= 1:
        return image
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.BICUBIC, reducing_gap=2.0)


def upload_bytes(upload) -> bytes:
    if upload is None:
        raise QueryRejected("Choose a photo to search with.")
    if upload.size > settings.MEEPO_MAX_UPLOAD_BYTES:
        raise QueryRejected(f"The photo is larger than {settings.MEEPO_MAX_UPLOAD_BYTES // (1024 * 1024)} MB.")
    return upload.read()


def url_bytes(url: str) -> bytes:
    url = (url or "").strip()
    if not url:
        raise QueryRejected("Give the URL of a photo.")
    try:
        return fetch_image(url, max_bytes=settings.MEEPO_MAX_UPLOAD_BYTES).content
    except FetchRefused as error:
        raise QueryRejected(str(error)) from None


def _decode(data: bytes, draft_size: tuple[int, int] | None):
    try:
        return load_rgb(data, max_pixels=settings.MEEPO_MAX_IMAGE_PIXELS, draft_size=draft_size)
    except ImageRejected as error:
        raise QueryRejected(str(error)) from None
