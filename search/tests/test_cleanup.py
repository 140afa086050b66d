import numpy as np
from PIL import Image, ImageDraw, ImageFont

from meepo.testing import DEMO_DIR
from search.cleanup import enhance, remove_text, text_mask


def photo() -> Image.Image:
    return Image.open(DEMO_DIR / "images" / "espresso-cup.jpg").convert("RGB").resize((480, 360))


def with_caption(image: Image.Image) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """A meme-style caption: white letters with a black outline across the top."""
    captioned = image.copy()
    draw = ImageDraw.Draw(captioned)
    font = ImageFont.load_default(size=44)
    draw.text((20, 10), "SALE 50% OFF", font=font, fill="white", stroke_width=3, stroke_fill="black")
    return captioned, draw.textbbox((20, 10), "SALE 50% OFF", font=font, stroke_width=3)


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
