"""Turning what a shopper sends (an uploaded file, a photo URL) into an image to search with.

Query photos are decoded in memory and never stored.
"""

from django.conf import settings

from catalog.fetching import FetchRefused, fetch_image
from catalog.images import ImageRejected, load_rgb


class QueryRejected(ValueError):
    """The query cannot be used; the message is shown to the shopper as it is."""


def image_from_upload(upload) -> "Image.Image":  # noqa: F821
    if upload is None:
        raise QueryRejected("Choose a photo to search with.")
    if upload.size > settings.MEEPO_MAX_UPLOAD_BYTES:
        raise QueryRejected(f"The photo is larger than {settings.MEEPO_MAX_UPLOAD_BYTES // (1024 * 1024)} MB.")
    return _decode(upload.read())


def image_from_url(url: str) -> "Image.Image":  # noqa: F821
    url = (url or "").strip()
    if not url:
        raise QueryRejected("Give the URL of a photo.")
    try:
        fetched = fetch_image(url, max_bytes=settings.MEEPO_MAX_UPLOAD_BYTES)
    except FetchRefused as error:
        raise QueryRejected(str(error)) from None
    return _decode(fetched.content)


def _decode(data: bytes):
    try:
        return load_rgb(data, max_pixels=settings.MEEPO_MAX_IMAGE_PIXELS)
    except ImageRejected as error:
        raise QueryRejected(str(error)) from None
