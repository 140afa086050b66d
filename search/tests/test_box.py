"""The box a shopper draws: parsing it, checking it against the photo, cutting it out (from a decode
just fine enough for it), and drawing a matched box on a thumbnail."""

import io

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from PIL import ExifTags, Image

from catalog.images import MAX_ASPECT_RATIO, too_thin
from catalog.models import ItemImage
from pipeline.encoder import get_encoder
from search.queries import MIN_BOX_SIDE, QueryRejected, parse_box, query_image
from search.searcher import box_percent

sides = st.integers(min_value=1, max_value=400)
coordinates = st.integers(min_value=-500, max_value=900)


@given(st.text(max_size=80))
def test_any_text_is_a_box_nothing_or_a_clear_refusal(text):
    try:
        box = parse_box(text)
    except QueryRejected as refusal:
        assert "x,y,w,h" in str(refusal)
        return
    assert box is None or (len(box) == 4 and all(isinstance(value, int) for value in box))


@given(st.lists(st.integers(min_value=-(10**30), max_value=10**30), min_size=4, max_size=4))
def test_four_whole_numbers_read_back_as_themselves(values):
    assert parse_box(",".join(map(str, values))) == tuple(values)


@settings(max_examples=200, deadline=None)  # the first example loads the model
@given(width=sides, height=sides, x=coordinates, y=coordinates, w=coordinates, h=coordinates)
def test_a_box_is_cut_out_exactly_when_it_lies_inside_the_photo_and_is_big_enough(width, height, x, y, w, h):
    assume(not too_thin(width, height))  # such a photo is refused whatever the box
    photo = io.BytesIO()
    Image.new("RGB", (width, height)).save(photo, format="PNG")
    fits = x >= 0 and y >= 0 and x + w <= width and y + h <= height and min(w, h) >= MIN_BOX_SIDE
    fits = fits and max(w, h) <= MAX_ASPECT_RATIO * min(w, h)
    try:
        region = query_image(photo.getvalue(), box=(x, y, w, h))
    except QueryRejected as refusal:
        assert not fits
        assert "box must" in str(refusal)
        return
    assert fits
    assert region.size == (w, h)


@given(width=sides, height=sides, data=st.data())
def test_a_matched_box_inside_the_image_stays_inside_the_thumbnail(width, height, data):
    x = data.draw(st.integers(0, width - 1))
    y = data.draw(st.integers(0, height - 1))
    w = data.draw(st.integers(1, width - x))
    h = data.draw(st.integers(1, height - y))

    outline = box_percent((x, y, w, h), ItemImage(width=width, height=height))

    assert outline["left"] >= 0 and outline["top"] >= 0
    assert outline["width"] > 0 and outline["height"] > 0
    # Rounded to two decimals: a hair over 100 at most.
    assert outline["left"] + outline["width"] <= 100.01
    assert outline["top"] + outline["height"] <= 100.01


def jpeg(image: Image.Image, **options) -> bytes:
    data = io.BytesIO()
    image.save(data, format="JPEG", quality=95, **options)
    return data.getvalue()


def test_a_box_on_a_big_photo_is_cut_from_a_decode_just_fine_enough_for_the_model():
    phone_photo = Image.linear_gradient("L").resize((4032, 3024)).convert("RGB")
    box = (2000, 1000, 600, 600)
    in_full = phone_photo.crop((2000, 1000, 2600, 1600))

    region = query_image(jpeg(phone_photo), box=box)

    # Half size: the box is still bigger than the model's input on both sides.
    assert region.size == (300, 300)
    assert min(region.size) >= max(get_encoder().draft_size)
    shrunk = np.asarray(in_full.resize(region.size, Image.Resampling.BOX), dtype=float)
    assert np.abs(np.asarray(region, dtype=float) - shrunk).mean() < 2
    assert encoded(region) @ encoded(in_full) > 0.999


def encoded(image: Image.Image) -> np.ndarray:
    return get_encoder().encode_images([image])[0]


def test_a_box_is_in_the_photo_as_shown_when_the_camera_stored_it_turned():
    upright = Image.new("RGB", (3000, 4000), "blue")
    upright.paste((255, 0, 0), (2000, 3000, 2800, 3800))
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6  # stored turned a quarter; shown after turning it back
    stored = jpeg(upright.transpose(Image.Transpose.ROTATE_90), exif=exif)

    region = query_image(stored, box=(2000, 3000, 800, 800))

    red, _, blue = np.asarray(region, dtype=float).reshape(-1, 3).mean(axis=0)
    assert red > 240 and blue < 15
    with pytest.raises(QueryRejected, match=r"inside the photo \(3000×4000 pixels\)"):
        query_image(stored, box=(3000, 0, 800, 800))
