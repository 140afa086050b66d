import io

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from meepo.testing import DEMO_DIR
from pipeline.encoder import get_encoder
from search.cleanup import enhance, remove_text, text_mask
from search.queries import CLEANUP_SIDE, least_size_for, query_image


def photo() -> Image.Image:
    return Image.open(DEMO_DIR / "images" / "espresso-cup.jpg").convert("RGB").resize((480, 360))


def with_caption(image: Image.Image) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """A meme-style caption: white letters with a black outline across the top."""
    captioned = image.copy()
    draw = ImageDraw.Draw(captioned)
    font = ImageFont.load_default(size=44)
    draw.text((20, 10), "SALE 50% OFF", font=font, fill="white", stroke_width=3, stroke_fill="black")
    return captioned, draw.textbbox((20, 10), "SALE 50% OFF", font=font, stroke_width=3)


def jpeg(image: Image.Image) -> bytes:
    data = io.BytesIO()
    image.save(data, format="JPEG", quality=95)
    return data.getvalue()


def difference(a: Image.Image, b: Image.Image, box) -> float:
    left, top, right, bottom = box
    crop = (slice(top, bottom), slice(left, right))
    return float(np.abs(np.asarray(a, dtype=float)[crop] - np.asarray(b, dtype=float)[crop]).mean())


def test_overlaid_text_is_found_and_painted_over():
    original = photo()
    captioned, box = with_caption(original)

    cleaned = remove_text(captioned)

    mask = text_mask(captioned)
    left, top, right, bottom = box
    assert mask[top:bottom, left:right].mean() > 0.2 * 255
    assert difference(cleaned, original, box) < 0.5 * difference(captioned, original, box)


def test_a_photo_without_text_is_left_almost_alone():
    original = photo()

    cleaned = remove_text(original)

    assert difference(cleaned, original, (0, 0, original.width, original.height)) < 2.0


def test_enhance_raises_contrast_and_brightness():
    original = photo()

    enhanced = np.asarray(enhance(original), dtype=float)

    assert enhanced.std() > np.asarray(original, dtype=float).std()
    assert enhanced.mean() > np.asarray(original, dtype=float).mean()


def test_clean_up_of_a_big_photo_works_on_at_most_1024_pixels_and_still_paints_over_text():
    original = photo()
    captioned, box = with_caption(original)

    cleaned = query_image(jpeg(captioned.resize((4000, 3000))), remove_text=True)

    assert cleaned.size == (CLEANUP_SIDE, 768)
    # Back at the test photo's size, the caption is gone as when it was cleaned at that size.
    cleaned = cleaned.resize(original.size)
    assert difference(cleaned, original, box) < 0.5 * difference(captioned, original, box)


def test_a_box_is_cut_from_the_full_photo_then_cleaned_up():
    big = Image.new("RGB", (4000, 3000), "blue")
    big.paste((255, 0, 0), (3000, 2000, 3500, 2500))

    region = query_image(jpeg(big), box=(3000, 2000, 500, 500), remove_text=True, enhance=True)

    assert region.size == (500, 500)
    red, _, blue = np.asarray(region, dtype=float).reshape(-1, 3).mean(axis=0)
    assert red > 200 and blue < 50


def test_a_big_box_is_cleaned_up_at_1024_pixels_too():
    region = query_image(jpeg(Image.new("RGB", (4000, 3000), "white")), box=(0, 0, 3000, 1500), enhance=True)

    assert region.size == (CLEANUP_SIDE, 512)


def test_a_query_photo_is_decoded_only_as_finely_as_what_is_done_with_it_needs():
    assert least_size_for(remove_text=True, enhance=False) == (CLEANUP_SIDE, CLEANUP_SIDE)
    assert least_size_for(remove_text=False, enhance=True) == (CLEANUP_SIDE, CLEANUP_SIDE)
    assert least_size_for(remove_text=False, enhance=False) == get_encoder().draft_size
