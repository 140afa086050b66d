"""Scoring region matches: window hits of one catalogue image become one score (issue #3)."""

from dataclasses import dataclass

import numpy as np

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class ImageMatch:
    image_id: int
    score: float
    match: str  # "full": the whole catalogue image matched; "region": one of its windows did
    box: Box | None = None  # for region matches, the best window in the image's pixels


def _cosines(scores: np.ndarray) -> np.ndarray:
    """The index's inner products of unit vectors, held to a cosine's range: the 8-bit codes of
    window vectors (and of IVF,SQ8 image indexes) give up to 1.0007, which let a region outrank an
    exact whole-image match in `both` mode."""
    return np.clip(scores, -1.0, 1.0)


def full_matches(ids: np.ndarray, scores: np.ndarray) -> list[ImageMatch]:
    return [ImageMatch(int(i), float(s), "full") for i, s in zip(ids, _cosines(scores), strict=True)]


def aggregate_windows(
    ids: np.ndarray,
    boxes: np.ndarray,
    scores: np.ndarray,
    counts: dict[int, int],
    *,
    weights: tuple[float, float, float],
) -> list[ImageMatch]:
    """One match per catalogue image from its windows among the hits, best first.

    score = w_max × best window + w_mean × mean of its hit windows + bonus × share of its windows
    hit (MEEPO_REGION_WEIGHTS: 1 / 0 / 0 by default, the seed design's 0.7 / 0.3 / 0.05 as an option).
    """
    w_max, w_mean, bonus = weights
    scores = _cosines(scores)
    grouped: dict[int, list[int]] = {}
    for row, image_id in enumerate(ids.tolist()):
        grouped.setdefault(image_id, []).append(row)
    matches = []
    for image_id, rows in grouped.items():
        best = rows[0]  # hits arrive best first
        mean = float(np.mean(scores[rows]))
        share = len(rows) / max(counts.get(image_id, len(rows)), 1)
        score = w_max * float(scores[best]) + w_mean * mean + bonus * share
        matches.append(ImageMatch(image_id, score, "region", tuple(int(v) for v in boxes[best])))
    return sorted(matches, key=lambda match: match.score, reverse=True)


def merge(*lists: list[ImageMatch]) -> list[ImageMatch]:
    """Each image once, with its better way of matching, best first."""
    best: dict[int, ImageMatch] = {}
    for matches in lists:
        for match in matches:
            if match.image_id not in best or match.score > best[match.image_id].score:
                best[match.image_id] = match
    return sorted(best.values(), key=lambda match: match.score, reverse=True)
