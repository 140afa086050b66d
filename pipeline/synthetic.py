"""Synthetic CLIP-like embeddings for sizing and tuning vector indexes without a real catalogue.

Uniform random unit vectors are a poor stand-in for CLIP embeddings: in 512 dimensions they are all
nearly orthogonal, have no neighbourhoods, and make every approximate index look either perfect or
useless. Real CLIP image embeddings differ in three ways this module imitates:

- A strong common direction. All image embeddings share a large mean component, so two unrelated
  images have a cosine of about 0.4-0.6. Here every vector is ``sqrt(0.5) * mean + rest``, which puts
  the random-pair cosine near 0.5.
- Clusters of very uneven size. Catalogues hold many photos of a few popular things and a few photos
  of many rare things. Vectors are drawn around a few thousand cluster centres whose sizes follow a
  Zipf-like power law (weight of the r-th centre ~ r^-0.9), so the largest clusters hold tens of
  thousands of vectors at 1M and the smallest a handful.
- Anisotropy. The variation around the mean lives mostly in a few dozen directions: centres and
  per-vector noise are Gaussian in a fixed random basis with variances decaying as a power of the
  component rank (like the PCA spectrum of real embeddings), which gives the data a low effective
  dimension, as real embeddings have. Per-vector noise is sized so that a vector's nearest neighbour
  has a cosine of roughly 0.8-0.95.

Queries come in two kinds, because they stress an index differently:

- Image queries ("more like this photo") are catalogue vectors perturbed along the data's own
  directions (a scaled difference of two other catalogue vectors), like another photo of the same
  thing: cosine about 0.9 to the vector they came from.
- Text queries model CLIP's modality gap: text embeddings sit in their own cone, shifted from the
  image cone by a roughly constant gap vector, so even the best-matching image has a cosine of only
  about 0.25-0.35. A text query here is a constant gap direction, a little of the image mean, the
  image-specific part of one catalogue vector (the "concept" it describes) and isotropic noise. The
  noise reaches directions images barely use and blurs the ranking, so a text query's top hits are
  spread over more of the space than an image query's: approximate indexes need more effort for
  them (as with the out-of-distribution text-to-image queries of real benchmarks).

Everything is float32 and generated in chunks, so a 1M x 512 catalogue needs its own 2 GB and little
more. Results depend only on the arguments (and numpy's generators), not on the chunk size.
"""

import numpy as np

CHUNK = 65_536
MEAN_WEIGHT = 0.5**0.5  # random-pair cosine ~ MEAN_WEIGHT**2
CENTRE_WEIGHT = 0.5**0.5 * 0.76  # the rest of the norm is shared between centre and noise
NOISE_WEIGHT = 0.5**0.5 * 0.65
CENTRE_SPECTRUM = 0.9  # variance of the i-th centre component ~ i**-CENTRE_SPECTRUM
NOISE_SPECTRUM = 0.8  # noise is flatter than the centres: more directions, as within-class variation is
ZIPF = 0.9
MAX_CLUSTERS = 4096
STRUCTURE_SEED = 20_240_501  # the basis, mean and gap directions are the same for every catalogue

IMAGE_QUERY_SPREAD = 0.45  # times the difference of two catalogue vectors (norm ~1): cosine ~0.9
TEXT_GAP = 0.75
TEXT_MEAN = 0.2
TEXT_CONCEPT = 0.25
TEXT_NOISE = (1 - TEXT_GAP**2 - TEXT_MEAN**2 - TEXT_CONCEPT**2) ** 0.5


def _normalise(rows: np.ndarray) -> np.ndarray:
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    return rows


def _structure(dimension: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A fixed random orthonormal basis: column 0 is the image mean direction, column 1 the text gap
    direction (orthogonal to the mean, so the gap mostly shifts text away rather than re-ranking images),
    the rest carry the anisotropic variation."""
    rng = np.random.default_rng(STRUCTURE_SEED + dimension)
    basis, _ = np.linalg.qr(rng.standard_normal((dimension, dimension)))
    return basis[:, 0].astype(np.float32), basis[:, 1].astype(np.float32), basis[:, 2:].T.astype(np.float32)


def _spectrum(size: int, power: float) -> np.ndarray:
    """Per-component standard deviations ~ rank**(-power/2), scaled so a draw has expected norm 1."""
    variances = np.arange(1, size + 1, dtype=np.float64) ** -power
    return (variances / variances.sum()) ** 0.5


def catalogue_vectors(count: int, dimension: int = 512, *, seed: int = 0) -> np.ndarray:
    """`count` unit float32 vectors that look like CLIP image embeddings (see the module docstring)."""
    if dimension < 8:
        raise ValueError("dimension must be at least 8")
    rng = np.random.default_rng(seed)
    mean, _, directions = _structure(dimension)
    varying = directions.shape[0]
    clusters = int(min(MAX_CLUSTERS, max(8, count // 64)))
    centre_scale = _spectrum(varying, CENTRE_SPECTRUM).astype(np.float32)
    noise_scale = _spectrum(varying, NOISE_SPECTRUM).astype(np.float32)
    centres = (rng.standard_normal((clusters, varying), dtype=np.float32) * centre_scale) @ directions
    weights = np.arange(1, clusters + 1, dtype=np.float64) ** -ZIPF
    weights /= weights.sum()
    out = np.empty((count, dimension), dtype=np.float32)
    for start in range(0, count, CHUNK):
        stop = min(count, start + CHUNK)
        members = rng.choice(clusters, size=stop - start, p=weights)
        noise = rng.standard_normal((stop - start, varying), dtype=np.float32) * noise_scale
        chunk = NOISE_WEIGHT * (noise @ directions)
        chunk += CENTRE_WEIGHT * centres[members]
        chunk += MEAN_WEIGHT * mean
        out[start:stop] = _normalise(chunk)
    return out


def image_queries(vectors: np.ndarray, count: int, *, seed: int = 2) -> np.ndarray:
    """Catalogue vectors moved by a scaled difference of two others: near-duplicates in the data's own
    directions (another photo of the same thing), not copies, so exact hits are not trivially 1.0."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(vectors), size=(3, count))
    queries = vectors[picks[0]] + IMAGE_QUERY_SPREAD * (vectors[picks[1]] - vectors[picks[2]])
    return _normalise(queries.astype(np.float32))


def text_queries(vectors: np.ndarray, count: int, *, seed: int = 1) -> np.ndarray:
    """Text-like queries across CLIP's modality gap: a constant gap direction, some of the image mean, the
    image-specific part of one catalogue vector and isotropic noise; best image cosine ~0.25-0.35."""
    rng = np.random.default_rng(seed)
    dimension = vectors.shape[1]
    _, gap, _ = _structure(dimension)
    sample = vectors[rng.integers(0, len(vectors), size=min(len(vectors), 10_000))]
    mean = sample.mean(axis=0)
    mean /= np.linalg.norm(mean)
    concept = vectors[rng.integers(0, len(vectors), size=count)].astype(np.float32)
    concept -= np.outer(concept @ mean, mean)
    gap = gap - (gap @ mean) * mean  # stay orthogonal to the estimated mean, whatever the catalogue
    gap /= np.linalg.norm(gap)
    noise = rng.standard_normal((count, dimension), dtype=np.float32) / np.float32(dimension**0.5)
    queries = TEXT_GAP * gap + TEXT_MEAN * mean + TEXT_CONCEPT * _normalise(concept) + TEXT_NOISE * noise
    return _normalise(queries.astype(np.float32))
