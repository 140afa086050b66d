"""Property tests of the box a shopper draws: parsing, checking against the photo, cutting it out,
and drawing a matched box on a thumbnail."""

from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from catalog.images import MAX_ASPECT_RATIO
from catalog.models import ItemImage
from search.queries import MIN_BOX_SIDE, QueryRejected, parse_box, prepare
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


@settings(max_examples=200)
@given(width=sides, height=sides, x=coordinates, y=coordinates, w=coordinates, h=coordinates)
def test_a_box_is_cut_out_exactly_when_it_lies_inside_the_photo_and_is_big_enough(width, height, x, y, w, h):
    photo = Image.new("RGB", (width, height))
    fits = x >= 0 and y >= 0 and x + w <= width and y + h <= height and min(w, h) >= MIN_BOX_SIDE
    fits = fits and max(w, h) <= MAX_ASPECT_RATIO * min(w, h)
    try:
        region = prepare(photo, box=(x, y, w, h))
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
