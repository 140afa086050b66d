"""Window geometry for region search: which parts of a catalogue image get their own vector.

Pure functions, no Django: boxes are (x, y, w, h) in the image's pixels.

Two layouts (MEEPO_WINDOWS):
- relative (default), e.g. "relative:0.5,0.75:0.5": square windows whose side is each fraction of
  the image's short side, overlapping by the last number. A square photo gets 9 + 4 = 13 windows.
  Elongated photos would get more; the layout then spreads fewer windows along the long side so an
  image costs at most `max_windows` (16), except that the largest windows always cover the image.
- fixed, e.g. "fixed:224,448:56": the seed design's fixed-pixel windows (sides in pixels, one
  stride), for catalogues of similar-sized photos. Sides larger than the image are clipped to it.
  The seed design's exact layout has no budget (MEEPO_WINDOWS_MAX=0): a 1000 × 800 photo then
  costs 180 + 88 windows.
"""

import math
from dataclasses import dataclass

Box = tuple[int, int, int, int]
DEFAULT_LAYOUT = "relative:0.5,0.75:0.5"
MAX_WINDOWS = 16


@dataclass(frozen=True)
class Layout:
    mode: str  # "relative" or "fixed"
    sizes: tuple[float, ...]  # fractions of the short side, or pixels
    step: float  # overlap fraction (relative) or stride in pixels (fixed)
    max_windows: int = MAX_WINDOWS  # 0: no budget

    @property
    def key(self) -> str:
        """Stamped on stored window vectors: a changed layout re-embeds windows."""
        sizes = ",".join(f"{size:g}" for size in self.sizes)
        return f"{self.mode}:{sizes}:{self.step:g}:{self.max_windows}"


def parse_layout(text: str, *, max_windows: int = MAX_WINDOWS) -> Layout:
    """Read a MEEPO_WINDOWS value; ValueError with a readable message when it makes no sense."""
    try:
        mode, sizes_text, step_text = text.strip().split(":")
        sizes = tuple(float(part) for part in sizes_text.split(",") if part.strip())
        step = float(step_text)
    except ValueError:
        raise ValueError(f"{text!r} is not MODE:SIZES:STEP, e.g. {DEFAULT_LAYOUT} or fixed:224,448:56") from None
    if mode == "relative":
        if not sizes or not all(0 < size <= 1 for size in sizes):
            raise ValueError("relative window sizes are fractions of the short side, between 0 and 1")
        if not 0 <= step < 1:
            raise ValueError("the overlap of relative windows must be at least 0 and below 1")
    elif mode == "fixed":
        if not sizes or not all(size >= 16 for size in sizes):
            raise ValueError("fixed window sizes are pixels, at least 16")
        if step < 8:
            raise ValueError("the stride of fixed windows must be at least 8 pixels")
    else:
        raise ValueError(f"window mode must be relative or fixed, not {mode!r}")
    return Layout(mode=mode, sizes=tuple(sorted(sizes)), step=step, max_windows=max_windows)


def _starts(length: int, side: int, stride: float, count: int) -> list[int]:
    """Window starts along one axis: every `stride` pixels with the last window flush with the
    edge, or, when the budget allows fewer, `count` starts spread evenly from 0 to length - side."""
    span = length - side
    if span <= 0:
        return [0]
    if count >= _count(length, side, stride):
        stride = max(1, int(stride))
        starts = list(range(0, span + 1, stride))
        return starts if starts[-1] == span else [*starts, span]
    if count <= 1:
        return [0]
    return sorted({round(span * index / (count - 1)) for index in range(count)})


def _count(length: int, side: int, stride: float) -> int:
    if side >= length:
        return 1
    stride = max(1, int(stride))
    return math.ceil((length - side) / stride) + 1


def windows(width: int, height: int, layout: Layout) -> list[Box]:
    """All windows of a width × height image, smallest first, each inside the image."""
    if width < 1 or height < 1:
        return []
    short = min(width, height)
    plans = []
    for size in layout.sizes:
        if layout.mode == "relative":
            side = max(1, round(size * short))
            stride = side * (1 - layout.step)
        else:
            side = min(int(size), short)
            stride = layout.step
        # A stride longer than the window would leave gaps between windows.
        stride = max(1.0, min(stride, side))
        plans.append([side, _count(width, side, stride), _count(height, side, stride), stride])
    if layout.max_windows:
        _fit_budget(plans, width, height, layout.max_windows)
    boxes: list[Box] = []
    for side, across, down, stride in plans:
        for y in _starts(height, side, stride, down):
            for x in _starts(width, side, stride, across):
                boxes.append((x, y, side, side))
    return list(dict.fromkeys(boxes))


def _fit_budget(plans: list[list[int]], width: int, height: int, budget: int) -> None:
    """Spread fewer windows along each axis until the image fits its budget; the largest windows
    keep enough to cover the whole image."""

    def total() -> int:
        return sum(across * down for _, across, down, _ in plans)

    largest = plans[-1]
    minimum = {id(largest): (math.ceil(width / largest[0]), math.ceil(height / largest[0]))}
    while total() > budget:
        # Take one window row or column from the plan and axis with the most windows to spare.
        best = None
        for plan in plans:
            floor_across, floor_down = minimum.get(id(plan), (1, 1))
            for axis, floor in ((1, floor_across), (2, floor_down)):
                if plan[axis] > floor and (best is None or plan[axis] > best[0][best[1]]):
                    best = (plan, axis)
        if best is None:
            return
        best[0][best[1]] -= 1


def box_area(box: Box) -> int:
    return box[2] * box[3]


def intersection_over_union(a: Box, b: Box) -> float:
    left, top = max(a[0], b[0]), max(a[1], b[1])
    right, bottom = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    overlap = max(0, right - left) * max(0, bottom - top)
    union = box_area(a) + box_area(b) - overlap
    return overlap / union if union else 0.0
