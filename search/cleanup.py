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

    Classic morphology rather than a learned detector (no weights to download): letters are small,
    high-contrast strokes that line up in rows, so close the gradient image along rows and keep the
    blobs shaped like lines of text.
    """
    import cv2

    grey = cv2.cvtColor(np.asarray(image), cv2.COLOR_RGB2GRAY)
    height, width = grey.shape
    gradient = cv2.morphologyEx(grey, cv2.MORPH_GRADIENT, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3)))
    _, strokes = cv2.threshold(gradient, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    row_kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (max(9, width // 60), 1))
    lines = cv2.morphologyEx(strokes, cv2.MORPH_CLOSE, row_kernel)
    contours, _ = cv2.findContours(lines, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    mask = np.zeros_like(grey)
    for contour in contours:
        x, y, w, h = cv2.boundingRect(contour)
        is_line_shaped = w >= 2.5 * h and 8 <= h <= height * 0.25 and w >= width * 0.08
        dense = cv2.countNonZero(strokes[y : y + h, x : x + w]) >= 0.3 * w * h
        if is_line_shaped and dense:
            mask[y : y + h, x : x + w] = strokes[y : y + h, x : x + w]
    return cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5)))


def remove_text(image: Image.Image) -> Image.Image:
    import cv2

    mask = text_mask(image)
    if not mask.any():
        return image
    cleaned = cv2.inpaint(np.asarray(image), mask, 5, cv2.INPAINT_TELEA)
    return Image.fromarray(cleaned)
