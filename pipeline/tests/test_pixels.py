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
    assert batch.is_contiguous()  # channels first, as the preprocess lays them out
    assert torch.equal(batch, torch.stack([preprocess(photo) for photo in photos]))


def test_greyscale_palette_and_transparent_photos_are_converted_like_the_preprocess():
    preprocess = open_clip.image_transform(224, is_train=False)
    recipe = Recipe.of(preprocess)
    photo = Image.open(PHOTOS[0]).convert("RGB")
    # Real transparency: PIL resizes such images with their alpha premultiplied.
    fading = photo.copy()
    fading.putalpha(Image.linear_gradient("L").resize(photo.size))
    for converted in (photo.convert("L"), photo.convert("P"), fading, fading.convert("LA"), fading.convert("PA")):
        prepared = recipe.normalise(recipe.stack([recipe.prepare(converted)]))[0]
        assert torch.equal(prepared, preprocess(converted)), converted.mode


def test_a_preprocess_that_converts_before_resizing_is_left_to_open_clip():
    from torchvision import transforms as T

    steps = open_clip.image_transform(224, is_train=False).transforms
    conversion = next(step for step in steps if getattr(step, "mode", None) == "RGB")
    converting_first = T.Compose([conversion, *(step for step in steps if step is not conversion)])

    assert Recipe.of(open_clip.image_transform(224, is_train=False)) is not None
    assert Recipe.of(converting_first) is None


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


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_batch_normalised_on_the_gpu_is_bit_for_bit_the_preprocess():
    preprocess = open_clip.image_transform(224, is_train=False)
    recipe = Recipe.of(preprocess)
    photos = shop_photo_sizes(8)

    batch = recipe.normalise(recipe.stack([recipe.prepare(photo) for photo in photos]).cuda())

    assert torch.equal(batch.cpu(), torch.stack([preprocess(photo) for photo in photos]))
