import json

import numpy as np
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from catalog.importing import import_catalog
from catalog.models import ItemImage
from meepo.testing import DEMO_DIR, demo_rows, write_catalogue
from pipeline import embedding
from pipeline import index as index_store
from pipeline.embedding import embed_catalog, lock_path
from pipeline.encoder import Encoder, configured_model
from pipeline.locking import AlreadyRunning, exclusive_lock
from pipeline.models import ImageVector, WindowVectors
from search.served_index import served_index


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


def test_the_command_says_when_the_whole_photos_are_searchable_then_prints_one_summary_line(small_catalogue, capsys):
    call_command("embed_catalog")

    switched, summary = capsys.readouterr().out.splitlines()
    assert switched == "embed_catalog: index switched in with 8 vectors; now windows of 8 images"
    assert summary.startswith("embed_catalog: encoded 8, skipped 0, failed 0, unreadable 0, windows of 8 images in ")
    assert "images/s); index rebuilt with 8 vectors" in summary


def test_full_without_windows_keeps_the_windows_it_has(indexed_catalogue):
    from pipeline.models import WindowVectors

    report = embed_catalog(full=True, windows=False)

    assert report.encoded == 8 and report.windows == 0
    assert WindowVectors.objects.count() == 8
    assert index_store.read_meta(index_store.current_version())["windows"]["images"] == 8


def served_while_windows_are_encoded(seen: list):
    """A windows_iter_wrapper that records, on the first batch of windows, the index a search sees."""

    def wrap(batches, total):
        for number, batch in enumerate(batches):
            if number == 0:
                seen.append(served_index())
            yield batch

    return wrap


def assert_finds_every_embedded_image(index) -> None:
    """Each embedded image is in the index, and its own vector finds it first."""
    vectors = dict(current_image_vectors())
    assert sorted(index.ids.tolist()) == sorted(vectors)
    for image_id, vector in vectors.items():
        found, _ = index.nearest(vector, 1)
        assert found.tolist() == [image_id]


def current_image_vectors():
    for image_id, data in ImageVector.objects.filter(model=configured_model().key).values_list("image_id", "data"):
        yield image_id, np.frombuffer(data, dtype=np.float16).astype(np.float32)


def count_builds(monkeypatch) -> list:
    built = []
    real = index_store.build_index

    def counted(**options):
        built.append(real(**options))
        return built[-1]

    monkeypatch.setattr(index_store, "build_index", counted)
    return built


def add_items(tmp_path, rows) -> None:
    assert import_catalog(path=write_catalogue(tmp_path / "more", rows)).created == len(rows)


def test_a_first_run_switches_in_the_whole_images_before_the_windows(small_catalogue):
    seen = []

    report = embed_catalog(windows_iter_wrapper=served_while_windows_are_encoded(seen))

    (early,) = seen
    assert early.meta["model_key"] == configured_model().key and early.windows is None
    assert_finds_every_embedded_image(early)
    assert early.size == 8
    final = served_index()
    assert final.version != early.version and final.size == 8 and final.windows.meta["images"] == 8
    assert report.switched_before_windows and report.index_vectors == 8
    assert report.summary().endswith("; index rebuilt with 8 vectors, first switched in before the windows")


def test_after_a_model_change_the_new_models_index_is_switched_in_before_the_windows(indexed_catalogue):
    # What a catalogue embedded and indexed by another model looks like to this one.
    other = "ViT-B-32:openai"
    ItemImage.objects.update(embedded_model=other)
    ImageVector.objects.update(model=other)
    WindowVectors.objects.update(model=other)
    meta_file = index_store.current_version() / index_store.META_FILE
    meta_file.write_text(json.dumps({**json.loads(meta_file.read_text()), "model_key": other}))
    seen = []

    report = embed_catalog(windows_iter_wrapper=served_while_windows_are_encoded(seen))

    # Eight images are far below EARLY_SWITCH_WINDOWS; without this index the site answers 503.
    assert report.encoded == 8 and report.windows == 8 and report.switched_before_windows
    (early,) = seen
    assert early.meta["model_key"] == configured_model().key and early.windows is None
    assert_finds_every_embedded_image(early)
    assert served_index().windows.meta["images"] == 8


def test_a_run_with_many_windows_to_encode_switches_in_its_new_images_first(indexed_catalogue, tmp_path, monkeypatch):
    monkeypatch.setattr(embedding, "EARLY_SWITCH_WINDOWS", 4)
    add_items(tmp_path, demo_rows(12)[8:])
    seen = []

    report = embed_catalog(windows_iter_wrapper=served_while_windows_are_encoded(seen))

    (early,) = seen
    assert_finds_every_embedded_image(early)
    # The windows encoded before stay in service meanwhile.
    assert early.size == 12 and early.windows.meta["images"] == 8
    assert served_index().windows.meta["images"] == 12
    assert report.switched_before_windows and (report.encoded, report.windows, report.index_vectors) == (4, 4, 12)


def test_a_small_run_for_the_served_model_builds_the_index_once(indexed_catalogue, tmp_path, monkeypatch):
    add_items(tmp_path, demo_rows(12)[8:])
    built = count_builds(monkeypatch)

    report = embed_catalog()

    assert (report.encoded, report.windows, report.index_vectors) == (4, 4, 12)
    assert not report.switched_before_windows
    assert built == [index_store.current_version()]
    assert index_store.read_meta(built[0])["windows"]["images"] == 12


def test_full_for_the_served_model_keeps_region_search_in_service_until_the_windows_are_done(
    indexed_catalogue, monkeypatch
):
    monkeypatch.setattr(embedding, "EARLY_SWITCH_WINDOWS", 1)
    built = count_builds(monkeypatch)
    seen = []

    report = embed_catalog(full=True, windows_iter_wrapper=served_while_windows_are_encoded(seen))

    (during,) = seen
    assert during.windows.meta["images"] == 8
    assert len(built) == 1 and not report.switched_before_windows


class Killed(Exception):
    pass


def test_a_run_killed_during_the_windows_leaves_the_whole_images_in_service_and_the_next_finishes(
    small_catalogue,
):
    def killed_after_one_batch(batches, total):
        for batch in batches:
            yield batch
            raise Killed

    with pytest.raises(Killed):
        embed_catalog(windows_iter_wrapper=killed_after_one_batch)

    served = served_index()
    assert served.size == 8 and served.windows is None
    assert_finds_every_embedded_image(served)
    done = WindowVectors.objects.count()
    assert 0 < done < 8

    report = embed_catalog()

    assert report.encoded == 0 and report.windows == 8 - done
    assert report.index_vectors == 8 and not report.switched_before_windows
    assert served_index().windows.meta["images"] == 8
    assert embed_catalog().index_vectors is None
