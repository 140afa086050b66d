import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.windows import DEFAULT_LAYOUT, intersection_over_union, parse_layout, windows

RELATIVE = parse_layout(DEFAULT_LAYOUT)
FIXED = parse_layout("fixed:224,448:56", max_windows=0)
sizes = st.integers(min_value=1, max_value=1600)


def covered(width, height, boxes) -> bool:
    mask = np.zeros((height, width), dtype=bool)
    for x, y, w, h in boxes:
        mask[y : y + h, x : x + w] = True
    return bool(mask.all())


@settings(max_examples=150, deadline=None)
@given(width=sizes, height=sizes, layout=st.sampled_from([RELATIVE, FIXED, parse_layout("fixed:224,448:56")]))
def test_every_window_lies_inside_the_image_and_together_they_cover_it(width, height, layout):
    boxes = windows(width, height, layout)

    assert boxes
    for x, y, w, h in boxes:
        assert x >= 0 and y >= 0 and w >= 1 and h >= 1
        assert x + w <= width and y + h <= height
    assert covered(width, height, boxes)
    assert len(set(boxes)) == len(boxes)


@settings(max_examples=150, deadline=None)
@given(short=st.integers(min_value=32, max_value=1600), ratio=st.floats(min_value=1.0, max_value=2.5))
def test_relative_windows_cost_at_most_16_for_common_shapes(short, ratio):
    width, height = round(short * ratio), short

    assert len(windows(width, height, RELATIVE)) <= 16
    assert len(windows(height, width, RELATIVE)) <= 16


@pytest.mark.parametrize(
    ("width", "height", "count"),
    [(1000, 1000, 13), (100, 100, 13), (1024, 768, 15), (768, 1024, 15), (2000, 1000, 15)],
)
def test_relative_window_counts_are_as_documented(width, height, count):
    assert len(windows(width, height, RELATIVE)) == count


def test_a_square_photo_gets_nine_half_windows_and_four_three_quarter_windows():
    boxes = windows(1000, 1000, RELATIVE)

    assert sorted({box[2] for box in boxes}) == [500, 750]
    assert sum(box[2] == 500 for box in boxes) == 9 and sum(box[2] == 750 for box in boxes) == 4


def test_the_seed_designs_fixed_layout_uses_a_56_pixel_stride():
    boxes = windows(1000, 800, FIXED)

    small = sorted({box[0] for box in boxes if box[2] == 224})
    assert small[:3] == [0, 56, 112] and small[-1] == 1000 - 224
    assert len(boxes) == 15 * 12 + 11 * 8


def test_window_sizes_larger_than_the_image_are_clipped():
    assert windows(300, 200, FIXED) == [(0, 0, 200, 200), (56, 0, 200, 200), (100, 0, 200, 200)]


@pytest.mark.parametrize(
    "text", ["relative:0,0.5:0.5", "relative:0.5:1", "fixed:8:56", "fixed:224:2", "diagonal:1:1", "relative"]
)
def test_nonsense_layouts_are_refused(text):
    with pytest.raises(ValueError):
        parse_layout(text)


def test_the_layout_key_changes_with_any_setting():
    keys = {parse_layout(text).key for text in (DEFAULT_LAYOUT, "relative:0.5,0.75:0.25", "fixed:224,448:56")}

    assert len(keys) == 3


def test_intersection_over_union():
    assert intersection_over_union((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert intersection_over_union((0, 0, 10, 10), (20, 20, 5, 5)) == 0.0
    assert intersection_over_union((0, 0, 10, 10), (5, 0, 10, 10)) == pytest.approx(50 / 150)
