"""Decoding untrusted image bytes: one loader for catalogue files, uploads and fetched photos."""

import hashlib
import io
import warnings
from dataclasses import dataclass

from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

# Formats a shop photo really comes in. Anything else (SVG, PDF, HTML...) is refused by sniffing
# the bytes, whatever the file name or Content-Type claims.
ALLOWED_FORMATS = {"JPEG": "jpg", "MPO": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp", "TIFF": "tif"}
OPENED_AS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")  # Pillow's JPEG parser also opens MPO files.
# The model sees a photo resized to 224 pixels on its short side: a 1 by 40,000 strip would take
# gigabytes. Shop photos, banners included, stay far below this.
MAX_ASPECT_RATIO = 50


class ImageRejected(ValueError):
    """The bytes are not an image Meepo can use; the message is safe to show to a user."""


@dataclass(frozen=True)
class ImageInfo:
    format: str
    extension: str
    width: int
    height: int
    sha256: str


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def too_thin(width: int, height: int) -> bool:
    return max(width, height) > MAX_ASPECT_RATIO * min(width, height)


def _open_lazily(data: bytes, max_pixels: int) -> Image.Image:
    if not data:
        raise ImageRejected("The file is empty.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            # Only the parsers of allowed formats ever see the bytes: Pillow would otherwise try
            # every plugin it has (EPS, PSD, ICNS...) on a hostile file.
            image = Image.open(io.BytesIO(data), formats=OPENED_AS)
    except UnidentifiedImageError:
        raise ImageRejected(
            "The file is not an image in a supported format (JPEG, PNG, WebP, GIF, BMP, TIFF)."
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageRejected(f"The image has too many pixels (the limit is {max_pixels:,}).") from None
    except Exception as error:  # Pillow raises many kinds of errors for hostile headers.
        raise ImageRejected("The image is damaged or unreadable.") from error
    width, height = image.size
    if width < 1 or height < 1:
        raise ImageRejected("The image has no pixels.")
    if width * height > max_pixels:
        raise ImageRejected(f"The image is too large ({width}×{height} pixels; the limit is {max_pixels:,} pixels).")
    if too_thin(width, height):
        raise ImageRejected(f"The image is too long and thin ({width}×{height} pixels; at most {MAX_ASPECT_RATIO}:1).")
    return image


def read_image(data: bytes, *, max_pixels: int) -> tuple[ImageInfo, Image.Image]:
    """Check that the bytes decode as a supported image; describe them and return the RGB pixels."""
    source = _open_lazily(data, max_pixels)
    image = _to_rgb(source)
    info = ImageInfo(
        format=source.format,
        extension=ALLOWED_FORMATS[source.format],
        width=image.width,
        height=image.height,
        sha256=sha256_of(data),
    )
    return info, image


def load_rgb(data: bytes, *, max_pixels: int, draft_size: tuple[int, int] | None = None) -> Image.Image:
    """Decode bytes to an upright RGB image; transparency is composited on white.

    draft_size lets JPEG decoding skip detail that a smaller target size would throw away.
    """
    return _to_rgb(_open_lazily(data, max_pixels), draft_size=draft_size)


def upright_size(data: bytes, *, max_pixels: int) -> tuple[int, int]:
    """The photo's width and height as load_rgb returns it in full (EXIF orientation applied),
    read from its header alone."""
    image = _open_lazily(data, max_pixels)
    width, height = image.size
    # Orientations 5 to 8 turn the photo a quarter: exif_transpose swaps its sides.
    if image.getexif().get(ExifTags.Base.Orientation, 1) in (5, 6, 7, 8):
        return height, width
    return width, height


def _to_rgb(image: Image.Image, *, draft_size: tuple[int, int] | None = None) -> Image.Image:
    try:
        image.seek(0)  # animations: the first frame
        if draft_size and image.format == "JPEG":
            image.draft("RGB", draft_size)
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image.load()
        image = ImageOps.exif_transpose(image)
        if image.mode == "I" or image.mode.startswith("I;16"):
            # 16-bit greyscale: scale to 8 bits rather than clipping everything to white. Pillow's
            # point() only takes native-order pixels, so big-endian TIFFs go through "I" first.
            image = image.convert("I").point(lambda value: value / 256).convert("L")
        elif image.has_transparency_data:  # an alpha band, or a transparent colour (PNG tRNS, GIF)
            rgba = image.convert("RGBA")
            background = Image.new("RGB", rgba.size, (255, 255, 255))
            background.paste(rgba, mask=rgba.getchannel("A"))
            return background
        return image.convert("RGB")
    except Exception as error:
        raise ImageRejected("The image is damaged or cut short, so it cannot be read.") from error


def make_thumbnail(image: Image.Image, *, size: int) -> bytes:
    thumbnail = image.copy()
    thumbnail.thumbnail((size, size), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    thumbnail.save(buffer, format="WEBP", quality=82, method=4)
    return buffer.getvalue()
