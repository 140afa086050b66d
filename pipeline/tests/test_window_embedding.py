import numpy as np
from PIL import Image

from catalog.images import load_rgb
from catalog.importing import import_catalog
from catalog.models import ItemImage
from meepo.testing import demo_rows, write_catalogue
from pipeline.embedding import embed_catalog
from pipeline.encoder import get_encoder
from pipeline.models import WindowVectors
from pipeline.window_embedding import configured_layout
from pipeline.windows import windows


def test_windows_of_a_large_photo_keep_its_full_size_boxes_from_a_smaller_decode(db, data_dir, tmp_path):
    rows = demo_rows(2)
    path = write_catalogue(tmp_path / "source", rows)
    photo = tmp_path / "source" / rows[0]["image"]
    with Image.open(photo) as small:
        small.convert("RGB").resize((2000, 1333), Image.Resampling.BICUBIC).save(photo, quality=92)
    assert import_catalog(path=path).created == 2

    embed_catalog()

    image = ItemImage.objects.get(item__title=rows[0]["title"])
    stored = WindowVectors.objects.get(image=image)
    boxes = windows(2000, 1333, configured_layout())
    assert (image.width, image.height) == (2000, 1333)
    assert np.frombuffer(stored.boxes, dtype=np.int32).reshape(-1, 4).tolist() == [list(box) for box in boxes]
    # The same windows cut from the full decode.
    pixels = load_rgb(image.read_bytes(), max_pixels=10**9)
    full = get_encoder().encode_images([pixels.crop((x, y, x + w, y + h)) for x, y, w, h in boxes])
    vectors = np.frombuffer(stored.data, dtype=np.float16).reshape(len(boxes), -1).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    assert (vectors * full).sum(axis=1).min() >= 0.99
