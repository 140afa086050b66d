"""Optional clean-up of query photos (issue #3): remove overlaid text, enhance a dull photo."""

import numpy as np
from PIL import Image, ImageEnhance


def enhance(image: Image.Image) -> Image.Image:
    """The seed design's enhancement: contrast +20%, brightness +10%, sharpness +10%."""
    image = ImageEnhance.Contrast(image).enhance(1.2)
    image = ImageEnhance.Brightness(image).enhance(1.1)
    return ImageEnhance.Sharpness(image).enhance(1.1)


def text_mask(image: Image.Image) -> np.ndarray:
    """Pixels that look like overlaid text (meme captions, watermarks), as a uint8 mask.

    Classic morphology rather than a learned detector (no weights to download): overlaid letters
    are near-white or near-black strokes with sharp edges, lined up in rows. Keep such pixels, join
    them along rows, and keep the blobs shaped like lines of text.
    """
    import cv2

    rgb = np.asarray(image)
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    height, width = grey.shape
    gradient = cv2.morphologyEx(grey, cv2.MORPH_GRADIENT, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3)))
    edges = gradient > 60
    ink = (rgb.min(axis=2) > 225) | (rgb.max(axis=2) < 30)
    near_edges = cv2.dilate(edges.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    strokes = (ink & near_edges).astype(np.uint8) * 255
    row_kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (max(9, width // 40), max(3, height // 100)))
    lines = cv2.morphologyEx(strokes, cv2.MORPH_CLOSE, row_kernel)
    contours, _ = cv2.findContours(lines, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    mask = np.zeros_like(grey)
    for contour in contours:
        x, y, w, h = cv2.boundingRect(contour)
        is_line_shaped = w >= 2 * h and 8 <= h <= height * 0.3 and w >= width * 0.1
        dense = cv2.countNonZero(strokes[y : y + h, x : x + w]) >= 0.15 * w * h
        if is_line_shaped and dense:
            mask[y : y + h, x : x + w] = strokes[y : y + h, x : x + w]
    return cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7)))


def remove_text(image: Image.Image) -> Image.Image:
    import cv2

    mask = text_mask(image)
    if not mask.any():
        return image
    cleaned = cv2.inpaint(np.asarray(image), mask, 5, cv2.INPAINT_TELEA)
    return Image.fromarray(cleaned)
