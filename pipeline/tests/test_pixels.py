import random

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from meepo.testing import DEMO_DIR
from pipeline.encoder import get_encoder
from pipeline.pixels import Recipe

PHOTOS = sorted((DEMO_DIR / "images").glob("*.jpg"))


def shop_photo_sizes(count: int):
    """Photos of every shape: portrait, landscape, square, tiny, thin, already the model's size."""
    rng = random.Random(4)
    sizes = [(224, 224), (224, 500), (500, 224), (1, 1), (3, 900), (900, 3), (225, 224)]
    sizes += [(rng.randint(20, 1200), rng.randint(20, 1200)) for _ in range(count - len(sizes))]
    return [Image.open(PHOTOS[number % len(PHOTOS)]).convert("RGB").resize(size) for number, size in enumerate(sizes)]


@pytest.mark.parametrize("size", [224, 64])
def test_a_batch_is_bit_for_bit_what_open_clip_s_preprocess_gives(size):
    preprocess = open_clip.image_transform(size, is_train=False)
    recipe = Recipe.of(preprocess)
    photos = shop_photo_sizes(40)

    batch = recipe.normalise(recipe.stack([recipe.prepare(photo) for photo in photos]))

    assert recipe.size == size
    assert torch.equal(batch, torch.stack([preprocess(photo) for photo in photos]))


def test_greyscale_and_transparent_photos_are_converted_like_the_preprocess():
    preprocess = open_clip.image_transform(224, is_train=False)
    recipe = Recipe.of(preprocess)
    photo = Image.open(PHOTOS[0])
    for mode in ("L", "RGBA", "P"):
        converted = photo.convert(mode)
        assert torch.equal(recipe.normalise(recipe.stack([recipe.prepare(converted)]))[0], preprocess(converted)), mode


@pytest.mark.parametrize(
    "options",
    [
        {"resize_mode": "squash"},
        {"resize_mode": "longest"},
        {"is_train": True},
        {"image_size": (224, 256)},
    ],
)
def test_other_preprocessing_is_left_to_open_clip(options):
    options = {"image_size": 224, "is_train": False, **options}
    assert Recipe.of(open_clip.image_transform(**options)) is None


def test_the_encoder_embeds_photos_through_the_recipe_with_the_preprocess_s_result():
    encoder = get_encoder()
    photos = shop_photo_sizes(8)

    fast = encoder.encode_images(photos)
    plain = encoder.encode_pixels(torch.stack([encoder.preprocess(photo) for photo in photos]))

    assert encoder.stack([encoder.prepare(photos[0])]).dtype == torch.uint8  # normalised where it is encoded
    assert np.array_equal(fast, plain)
