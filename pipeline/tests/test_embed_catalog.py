import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from catalog.models import ItemImage
from meepo.testing import DEMO_DIR
from pipeline import index as index_store
from pipeline.embedding import embed_catalog, lock_path
from pipeline.encoder import Encoder
from pipeline.locking import AlreadyRunning, exclusive_lock
from pipeline.models import ImageVector


def test_the_first_run_encodes_every_image_and_builds_the_index(small_catalogue):
    report = embed_catalog()

    assert (report.encoded, report.skipped, report.failed) == (8, 0, 0)
    assert report.index_vectors == 8
    assert ItemImage.objects.filter(embedding_state=ItemImage.State.EMBEDDED).count() == 8
    meta = index_store.read_meta(index_store.current_version())
    assert meta["model"] == "meepo-tiny" and meta["pretrained"] is None
    assert meta["vectors"] == 8 and meta["dimension"] == 64 and meta["index_type"] == "flat"


def test_vectors_are_stored_normalised(indexed_catalogue):
    import numpy as np

    for vector in ImageVector.objects.all():
        values = np.frombuffer(vector.data, dtype=np.float16).astype(np.float32)
        assert abs(float(np.linalg.norm(values)) - 1.0) < 2e-3


def test_a_second_run_encodes_nothing_and_keeps_the_index(indexed_catalogue):
    before = index_store.current_version()

    report = embed_catalog()

    assert (report.encoded, report.skipped) == (0, 8)
    assert report.index_vectors is None
    assert index_store.current_version() == before


def test_a_changed_image_is_encoded_again(indexed_catalogue):
    image = ItemImage.objects.order_by("id").first()
    image.attach((DEMO_DIR / "images" / "raccoon.jpg").read_bytes())
    image.save()

    report = embed_catalog()

    assert (report.encoded, report.skipped) == (1, 7)
    assert ImageVector.objects.get(image=image).sha256 == image.sha256


def test_a_run_killed_before_the_switch_leaves_an_index_the_next_run_rebuilds(indexed_catalogue):
    served = index_store.current_version()
    image = ItemImage.objects.order_by("id").first()
    image.attach((DEMO_DIR / "images" / "raccoon.jpg").read_bytes())
    image.save()
    embed_catalog()
    # What a kill between storing the vectors and switching the index leaves: the new vector and
    # windows in the database, the index of before in service (the same number of vectors).
    index_store._switch_to(served)

    report = embed_catalog()

    assert report.encoded == 0 and report.index_vectors == 8
    rebuilt = index_store.current_version()
    assert rebuilt != served and index_store.read_meta(rebuilt)["content"] != index_store.read_meta(served)["content"]
    assert embed_catalog().index_vectors is None  # and then it is up to date


def test_images_embedded_by_another_model_are_encoded_again(indexed_catalogue):
    ItemImage.objects.filter(id__in=ItemImage.objects.order_by("id")[:3].values("id")).update(
        embedded_model="ViT-B-32:openai"
    )

    report = embed_catalog()

    assert report.encoded == 3
    assert set(ItemImage.objects.values_list("embedded_model", flat=True)) == {"meepo-tiny:untrained"}


def test_full_re_encodes_everything(indexed_catalogue):
    report = embed_catalog(full=True)

    assert (report.encoded, report.skipped) == (8, 0)
    assert report.index_vectors == 8


@pytest.mark.parametrize("alongside", [False, True], ids=["decoded-first (CPU)", "decoded-alongside (GPU)"])
def test_a_damaged_image_fails_an_unreadable_file_waits_and_the_run_goes_on(
    small_catalogue, data_dir, monkeypatch, alongside
):
    monkeypatch.setattr(Encoder, "decodes_alongside", alongside)
    broken, missing = ItemImage.objects.order_by("id")[:2]
    (data_dir / "media" / broken.file.name).write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    kept = (data_dir / "media" / missing.file.name).read_bytes()
    (data_dir / "media" / missing.file.name).unlink()

    report = embed_catalog()

    assert (report.encoded, report.failed, report.unreadable) == (6, 1, 1)
    broken.refresh_from_db()
    missing.refresh_from_db()
    assert broken.embedding_state == ItemImage.State.FAILED and "damaged" in broken.embedding_error
    # A file that cannot be read now may be later (imported as root before a chown, a mount not up).
    assert missing.embedding_state == ItemImage.State.PENDING
    assert "could not be read (FileNotFoundError); tried again on the next run" in missing.embedding_error
    assert report.index_vectors == 6
    # Damaged bytes are not retried every night, only when the bytes or the model change; and a run
    # that encodes nothing keeps the index.
    again = embed_catalog()
    assert (again.encoded, again.unreadable, again.index_vectors) == (0, 1, None)
    (data_dir / "media" / missing.file.name).write_bytes(kept)
    assert embed_catalog().encoded == 1


def test_a_deleted_image_leaves_the_index_on_the_next_run(indexed_catalogue):
    ItemImage.objects.order_by("id").first().delete()

    report = embed_catalog()

    assert report.encoded == 0 and report.index_vectors == 7


def test_a_second_run_while_one_is_running_stops_at_once(small_catalogue):
    with exclusive_lock(lock_path(), what="embed_catalog"):
        with pytest.raises(AlreadyRunning, match="already running"):
            embed_catalog()
        with pytest.raises(CommandError, match="embed_catalog is already running"):
            call_command("embed_catalog")
    assert ImageVector.objects.count() == 0
    assert embed_catalog().encoded == 8


def test_the_command_prints_one_summary_line(small_catalogue, capsys):
    call_command("embed_catalog")

    out = capsys.readouterr().out
    assert out.startswith("embed_catalog: encoded 8, skipped 0, failed 0, unreadable 0, windows of 8 images in ")
    assert "images/s); index rebuilt with 8 vectors" in out


def test_full_without_windows_keeps_the_windows_it_has(indexed_catalogue):
    from pipeline.models import WindowVectors

    report = embed_catalog(full=True, windows=False)

    assert report.encoded == 8 and report.windows == 0
    assert WindowVectors.objects.count() == 8
    assert index_store.read_meta(index_store.current_version())["windows"]["images"] == 8
