"""The loader that every uploaded, fetched or imported image goes through (issue 5)."""

import hashlib
import io
import struct
import zlib

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from PIL import Image

from catalog.images import ImageRejected, load_rgb, read_image

MAX_PIXELS = 40_000_000
RED, GREEN, BLUE, WHITE, BLACK = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255), (0, 0, 0)
COLOUR_NAMES = {RED: "red", GREEN: "green", BLUE: "blue", WHITE: "white", BLACK: "black"}
ORIENTATION = 0x0112

# Load every Pillow plugin now, so that counting image allocations counts only the loader's.
Image.init()


def encode(image: Image.Image, format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_claiming(width: int, height: int) -> bytes:
    """A PNG of a few dozen bytes whose header claims width × height RGB pixels."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\0" * 16)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", pixels) + png_chunk(b"IEND", b"")


def gif_claiming(screen: tuple[int, int], frame: tuple[int, int]) -> bytes:
    """A GIF whose logical screen is `screen` and whose first frame covers `frame` from the top left."""
    return b"".join(
        [
            b"GIF89a" + struct.pack("<HH", *screen) + b"\x00\x00\x00",
            b"," + struct.pack("<HHHH", 0, 0, *frame) + b"\x00",
            b"\x02\x02\x44\x01\x00;",
        ]
    )


def jpeg_claiming(width: int, height: int) -> bytes:
    """A real 8×8 JPEG whose frame header is rewritten to claim width × height."""
    data = bytearray(encode(Image.new("RGB", (8, 8)), "JPEG"))
    start_of_frame = data.index(b"\xff\xc0")
    data[start_of_frame + 5 : start_of_frame + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def image_allocations() -> int:
    return Image.core.get_stats()["new_count"]


def colour_name(pixel: tuple[int, int, int]) -> str:
    """The nearest named colour, so lossy formats can be checked by what a person would see."""
    return min(COLOUR_NAMES.items(), key=lambda named: sum((a - b) ** 2 for a, b in zip(named[0], pixel, strict=True)))[
        1
    ]


def corners(image: Image.Image) -> tuple[str, str, str, str]:
    """Colour names at the top left, top right, bottom left and bottom right."""
    width, height = image.size
    left, right, top, bottom = width // 4, 3 * width // 4, height // 4, 3 * height // 4
    return tuple(
        colour_name(image.getpixel(point)) for point in [(left, top), (right, top), (left, bottom), (right, bottom)]
    )


def upright_photo(width: int = 64, height: int = 32) -> Image.Image:
    """Red top left, green top right, blue bottom left, white bottom right: every flip and turn looks different."""
    image = Image.new("RGB", (width, height), WHITE)
    image.paste(RED, (0, 0, width // 2, height // 2))
    image.paste(GREEN, (width // 2, 0, width, height // 2))
    image.paste(BLUE, (0, height // 2, width // 2, height))
    return image


UPRIGHT = ("red", "green", "blue", "white")

# How a camera stores an upright scene for each EXIF orientation (EXIF 2.32, tag 0x0112): what the viewer
# must undo. Orientation 6 is stored a quarter turn anticlockwise, so it must be turned clockwise to show.
STORED_FOR_ORIENTATION = {
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def stored_photo(orientation: int, format: str = "JPEG", size: tuple[int, int] = (64, 32)) -> bytes:
    turn = STORED_FOR_ORIENTATION[orientation]
    image = upright_photo(*size)
    stored = image.transpose(turn) if turn is not None else image
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    options = {"quality": 95} if format == "JPEG" else {}
    return encode(stored, format, exif=exif, **options)


# Decompression bombs


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(png_claiming(100_000, 100_000), id="png-100000x100000"),
        pytest.param(png_claiming(8_000, 8_000), id="png-8000x8000"),
        pytest.param(jpeg_claiming(60_000, 60_000), id="jpeg-60000x60000"),
        pytest.param(gif_claiming((1, 1), (30_000, 30_000)), id="gif-first-frame-beyond-the-screen"),
        pytest.param(gif_claiming((7_000, 7_000), (1, 1)), id="gif-7000x7000-screen"),
    ],
)
def test_a_tiny_file_claiming_too_many_pixels_is_refused_before_any_pixels_are_allocated(data):
    assert len(data) < 1000
    before = image_allocations()

    with pytest.raises(ImageRejected, match=r"too many pixels|too large") as refusal:
        load_rgb(data, max_pixels=MAX_PIXELS)

    assert "40,000,000" in str(refusal.value)
    assert image_allocations() == before


def test_a_long_thin_strip_is_refused_before_it_is_resized_to_gigabytes():
    with pytest.raises(ImageRejected, match=r"too long and thin \(4×204 pixels; at most 50:1\)"):
        load_rgb(encode(Image.new("RGB", (4, 204)), "PNG"), max_pixels=MAX_PIXELS)

    assert load_rgb(encode(Image.new("RGB", (200, 4)), "PNG"), max_pixels=MAX_PIXELS).size == (200, 4)


def test_the_pixel_cap_is_the_one_the_caller_sets():
    data = encode(Image.new("RGB", (33, 33)), "PNG")

    with pytest.raises(ImageRejected, match=r"too large \(33×33 pixels; the limit is 1,024 pixels\)"):
        read_image(data, max_pixels=1024)
    assert load_rgb(data, max_pixels=33 * 33).size == (33, 33)


# Animations


def frames(*colours: tuple[int, int, int]) -> list[Image.Image]:
    return [Image.new("RGB", (16, 8), colour) for colour in colours]


@pytest.mark.parametrize("format", ["GIF", "WEBP", "PNG"])
def test_an_animation_is_read_as_its_first_frame(format):
    first, *rest = frames(RED, GREEN, BLUE)
    data = encode(first, format, save_all=True, append_images=rest, duration=100, loop=0, lossless=True)
    assert Image.open(io.BytesIO(data)).n_frames == 3

    image = load_rgb(data, max_pixels=MAX_PIXELS)

    assert image.mode == "RGB" and image.size == (16, 8)
    assert image.getpixel((8, 4)) == RED


# Sniffing the type from the bytes

NOT_SUPPORTED = "not an image in a supported format (JPEG, PNG, WebP, GIF, BMP, TIFF)"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param(b"", "The file is empty.", id="zero-bytes"),
        pytest.param(b"<svg xmlns='http://www.w3.org/2000/svg' width='10' height='10'/>", NOT_SUPPORTED, id="svg"),
        pytest.param(b"<?xml version='1.0'?><svg xmlns='http://www.w3.org/2000/svg'/>", NOT_SUPPORTED, id="svg-xml"),
        pytest.param(b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\n%%EOF", NOT_SUPPORTED, id="pdf"),
        pytest.param(
            b"<!DOCTYPE html><html><body><img src=x onerror=alert(1)></body></html>", NOT_SUPPORTED, id="html"
        ),
        pytest.param(
            b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff" + b"\0" * 64, NOT_SUPPORTED, id="windows-exe"
        ),
        pytest.param(b"\x7fELF\x02\x01\x01\x00" + b"\0" * 56, NOT_SUPPORTED, id="elf"),
        pytest.param(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", NOT_SUPPORTED, id="eps"),
        pytest.param(
            b"8BPS\x00\x01" + b"\0" * 6 + b"\x00\x03" + b"\0\0\0\x10" * 2 + b"\x00\x08\x00\x03", NOT_SUPPORTED, id="psd"
        ),
        pytest.param(encode(Image.new("RGB", (4, 4)), "PPM"), NOT_SUPPORTED, id="ppm-that-pillow-reads"),
        pytest.param(encode(Image.new("RGB", (4, 4)), "ICO"), NOT_SUPPORTED, id="ico-that-pillow-reads"),
        pytest.param(bytes(range(256)) * 4, NOT_SUPPORTED, id="random-looking-bytes"),
        pytest.param(encode(upright_photo(), "JPEG")[:400], "damaged", id="truncated-jpeg"),
        pytest.param(
            encode(upright_photo(), "JPEG", progressive=True)[:400], "damaged", id="truncated-progressive-jpeg"
        ),
        pytest.param(encode(upright_photo(), "PNG")[:60], "damaged", id="truncated-png-in-the-pixels"),
        pytest.param(encode(upright_photo(), "PNG")[:20], "damaged", id="truncated-png-in-the-header"),
        pytest.param(encode(upright_photo(), "GIF")[:40], "damaged", id="truncated-gif"),
        pytest.param(png_claiming(0, 5), NOT_SUPPORTED, id="png-with-zero-width"),
    ],
)
def test_anything_but_a_whole_supported_image_is_refused_with_a_clear_message(data, message):
    with pytest.raises(ImageRejected) as refusal:
        read_image(data, max_pixels=MAX_PIXELS)

    assert message in str(refusal.value)


def test_the_file_name_is_never_what_decides_the_type():
    # A PNG renamed photo.jpg is still a PNG: the loader only ever sees bytes.
    info, _ = read_image(encode(upright_photo(), "PNG"), max_pixels=MAX_PIXELS)

    assert (info.format, info.extension) == ("PNG", "png")


# Every real mode and format


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_is_shown_upright(orientation):
    image = load_rgb(stored_photo(orientation), max_pixels=MAX_PIXELS)

    assert image.size == (64, 32)
    assert corners(image) == UPRIGHT


@pytest.mark.parametrize("format", ["PNG", "WEBP", "TIFF"])
@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_is_applied_in_other_formats_too(format, orientation):
    image = load_rgb(stored_photo(orientation, format), max_pixels=MAX_PIXELS)

    assert corners(image) == UPRIGHT


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_a_draft_decoded_jpeg_is_still_upright(orientation):
    data = stored_photo(orientation, size=(640, 320))

    image = load_rgb(data, max_pixels=MAX_PIXELS, draft_size=(80, 40))

    assert image.width < 640 and image.width / image.height == 2
    assert corners(image) == UPRIGHT


def test_read_image_describes_the_upright_image_and_the_exact_bytes():
    data = stored_photo(6)

    info, image = read_image(data, max_pixels=MAX_PIXELS)

    assert (info.format, info.extension, info.width, info.height) == ("JPEG", "jpg", 64, 32)
    assert image.size == (64, 32)
    assert info.sha256 == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize(
    ("format", "options"),
    [
        ("JPEG", {"quality": 95}),
        ("JPEG", {"quality": 95, "progressive": True}),
        ("PNG", {}),
        ("WEBP", {"quality": 95}),
        ("WEBP", {"lossless": True}),
        ("GIF", {}),
        ("BMP", {}),
        ("TIFF", {}),
        ("TIFF", {"compression": "tiff_lzw"}),
    ],
)
def test_a_colour_photo_keeps_its_colours_in_every_format(format, options):
    image = load_rgb(encode(upright_photo(), format, **options), max_pixels=MAX_PIXELS)

    assert image.mode == "RGB" and image.size == (64, 32)
    assert corners(image) == UPRIGHT


def test_a_cmyk_jpeg_comes_out_in_rgb_with_the_right_colours():
    cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # no cyan, full magenta and yellow: red
    cmyk.paste((255, 255, 0, 0), (8, 0, 16, 16))  # cyan and magenta: blue

    image = load_rgb(encode(cmyk, "JPEG", quality=95), max_pixels=MAX_PIXELS)

    assert image.mode == "RGB"
    assert colour_name(image.getpixel((2, 8))) == "red"
    assert colour_name(image.getpixel((13, 8))) == "blue"


def test_a_cmyk_tiff_comes_out_in_rgb_with_the_right_colours():
    cmyk = Image.new("CMYK", (4, 4), (0, 255, 255, 0))

    assert load_rgb(encode(cmyk, "TIFF"), max_pixels=MAX_PIXELS).getpixel((0, 0)) == RED


def test_a_palette_image_keeps_its_colours():
    image = upright_photo().convert("P", palette=Image.Palette.ADAPTIVE, colors=4)

    loaded = load_rgb(encode(image, "PNG"), max_pixels=MAX_PIXELS)

    assert [loaded.getpixel(point) for point in [(0, 0), (63, 0), (0, 31), (63, 31)]] == [RED, GREEN, BLUE, WHITE]


@pytest.mark.parametrize("format", ["PNG", "GIF"])
def test_the_transparent_colour_of_a_palette_image_becomes_white(format):
    image = Image.new("P", (4, 1))
    image.putpalette([*BLACK, *RED])
    image.putdata([0, 1, 0, 1])

    loaded = load_rgb(encode(image, format, transparency=0), max_pixels=MAX_PIXELS)

    assert list(loaded.get_flattened_data()) == [WHITE, RED, WHITE, RED]


@pytest.mark.parametrize(("mode", "key"), [("RGB", BLACK), ("L", 0)])
def test_the_transparent_colour_of_a_grey_or_rgb_png_becomes_white(mode, key):
    image = Image.new(mode, (2, 1))
    image.putpixel((1, 0), (200, 10, 10) if mode == "RGB" else 200)

    loaded = load_rgb(encode(image, "PNG", transparency=key), max_pixels=MAX_PIXELS)

    assert loaded.getpixel((0, 0)) == WHITE
    assert loaded.getpixel((1, 0)) == ((200, 10, 10) if mode == "RGB" else (200, 200, 200))


@pytest.mark.parametrize(("format", "options"), [("PNG", {}), ("WEBP", {"lossless": True}), ("TIFF", {}), ("GIF", {})])
def test_transparent_pixels_are_put_on_white_and_opaque_ones_kept(format, options):
    image = Image.new("RGBA", (3, 1))
    image.putdata([(0, 0, 0, 0), (255, 0, 0, 255), (0, 0, 255, 255)])

    loaded = load_rgb(encode(image, format, **options), max_pixels=MAX_PIXELS)

    assert list(loaded.get_flattened_data()) == [WHITE, RED, BLUE]


def test_half_transparent_black_becomes_grey_on_white():
    image = Image.new("RGBA", (1, 1), (0, 0, 0, 128))

    (pixel,) = load_rgb(encode(image, "PNG"), max_pixels=MAX_PIXELS).get_flattened_data()

    assert pixel == (127, 127, 127)


@pytest.mark.parametrize("format", ["PNG", "TIFF"])
def test_grey_with_alpha_is_put_on_white(format):
    image = Image.new("LA", (2, 1))
    image.putdata([(0, 0), (60, 255)])

    loaded = load_rgb(encode(image, format), max_pixels=MAX_PIXELS)

    assert list(loaded.get_flattened_data()) == [WHITE, (60, 60, 60)]


@pytest.mark.parametrize(("mode", "format"), [("I;16", "PNG"), ("I;16", "TIFF"), ("I;16B", "TIFF")])
def test_sixteen_bit_grey_is_scaled_to_eight_bits_not_clipped_to_white(mode, format):
    image = Image.new(mode, (4, 1))
    image.putdata([0, 1000, 32768, 65535])
    data = encode(image, format)
    assert Image.open(io.BytesIO(data)).mode == mode

    loaded = load_rgb(data, max_pixels=MAX_PIXELS)

    assert [pixel[0] for pixel in loaded.get_flattened_data()] == [0, 3, 128, 255]


@pytest.mark.parametrize(("mode", "format"), [("1", "PNG"), ("1", "BMP"), ("1", "TIFF"), ("L", "JPEG"), ("L", "PNG")])
def test_black_and_white_and_grey_images_come_out_as_rgb(mode, format):
    image = Image.new(mode, (16, 8), 255)
    image.paste(0, (0, 0, 8, 8))

    loaded = load_rgb(encode(image, format), max_pixels=MAX_PIXELS)

    assert loaded.mode == "RGB"
    assert colour_name(loaded.getpixel((2, 4))) == "black" and colour_name(loaded.getpixel((13, 4))) == "white"


def test_an_mpo_from_a_stereo_camera_is_read_as_its_first_picture():
    left, right = frames(RED, GREEN)
    data = encode(left, "MPO", save_all=True, append_images=[right], quality=95)

    info, image = read_image(data, max_pixels=MAX_PIXELS)

    assert (info.format, info.extension) == ("MPO", "jpg")
    assert colour_name(image.getpixel((8, 4))) == "red"


# Properties: whatever the bytes, the loader answers with an RGB image or ImageRejected

property_settings = hypothesis_settings(
    max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
MAGIC_NUMBERS = [b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"RIFF\0\0\0\0WEBPVP8 ", b"GIF89a", b"BM", b"II*\0", b"MM\0*"]


def loads_or_refuses(data: bytes) -> Image.Image | None:
    try:
        image = load_rgb(data, max_pixels=1_000_000)
    except ImageRejected as refusal:
        assert str(refusal)
        return None
    assert image.mode == "RGB" and image.width >= 1 and image.height >= 1
    return image


@property_settings
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_give_an_rgb_image_or_a_refusal(data):
    loads_or_refuses(data)


@property_settings
@given(st.sampled_from(MAGIC_NUMBERS), st.binary(max_size=2000))
def test_garbage_behind_an_image_signature_gives_an_rgb_image_or_a_refusal(magic, rest):
    loads_or_refuses(magic + rest)


WRITABLE = {
    "JPEG": ["L", "RGB", "CMYK"],
    "PNG": ["1", "L", "LA", "P", "RGB", "RGBA", "I;16"],
    "WEBP": ["RGB", "RGBA"],
    "GIF": ["L", "P"],
    "BMP": ["1", "L", "P", "RGB"],
    "TIFF": ["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I;16"],
}
TAKES_EXIF = {"JPEG", "PNG", "WEBP", "TIFF"}


@st.composite
def small_images(draw) -> tuple[bytes, tuple[int, int]]:
    """Encoded bytes of a random small image, and the upright size the loader should give."""
    format = draw(st.sampled_from(sorted(WRITABLE)))
    mode = draw(st.sampled_from(WRITABLE[format]))
    width, height = draw(st.integers(1, 48)), draw(st.integers(1, 48))
    noise = draw(st.randoms(use_true_random=False))
    if mode == "I;16":
        image = Image.frombytes(mode, (width, height), noise.randbytes(width * height * 2))
    else:
        image = Image.frombytes("RGBA", (width, height), noise.randbytes(width * height * 4)).convert(mode)
    options = {}
    orientation = 1
    if format in TAKES_EXIF and draw(st.booleans()):
        orientation = draw(st.integers(1, 8))
        exif = Image.Exif()
        exif[ORIENTATION] = orientation
        options["exif"] = exif
    upright = (height, width) if orientation >= 5 else (width, height)
    return encode(image, format, **options), upright


@property_settings
@given(small_images())
def test_any_small_valid_image_comes_out_rgb_at_its_upright_size(case):
    data, upright = case

    image = loads_or_refuses(data)

    assert image is not None and image.size == upright


@property_settings
@given(small_images(), st.data())
def test_a_valid_image_cut_short_anywhere_gives_an_image_or_a_refusal(case, data):
    encoded, _ = case
    cut = data.draw(st.integers(0, len(encoded) - 1))
    loads_or_refuses(encoded[:cut])


@property_settings
@given(small_images(), st.data())
def test_a_valid_image_with_corrupted_bytes_gives_an_image_or_a_refusal(case, data):
    encoded = bytearray(case[0])
    for _ in range(data.draw(st.integers(1, 8))):
        encoded[data.draw(st.integers(0, len(encoded) - 1))] = data.draw(st.integers(0, 255))
    loads_or_refuses(bytes(encoded))


def test_garbage_never_escapes_as_another_exception():
    # The examples that matter most when a property above ever fails, kept as a fast regression list.
    for data in [b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"BM", b"II*\0", b"MM\0*", b"RIFF\0\0\0\0WEBP"]:
        assert loads_or_refuses(data) is None


def test_stored_photos_are_readable_by_a_web_server_running_as_another_user(small_catalogue, data_dir):
    import stat

    image = small_catalogue[0].images.first()
    for name in (image.file.name, image.thumbnail_name):
        mode = (data_dir / "media" / name).stat().st_mode
        assert mode & stat.S_IROTH, f"{name} is {stat.filemode(mode)}"
