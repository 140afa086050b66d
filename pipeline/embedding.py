"""embed_catalog: encode new or changed catalogue images, then rebuild and switch in the index."""

import hashlib
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from catalog.images import ImageRejected
from catalog.models import ItemImage
from pipeline import index as index_store
from pipeline.batching import Unreadable, prefetched, read_files
from pipeline.encoder import Encoder, configured_model, get_encoder
from pipeline.locking import exclusive_lock
from pipeline.models import ImageVector, WindowVectors
from pipeline.window_embedding import (
    configured_layout,
    current_windows,
    embed_windows,
    images_needing_windows,
    load_windows,
)
from pipeline.windows import Layout

# From this many images whose windows are to be encoded (3 to 5 minutes of windows for ViT-B-32 on
# 2 CPU cores), a run that encoded whole images switches them in before the windows pass too; below,
# the extra rebuild (seconds, up to a couple of minutes for a large catalogue) is not worth it.
EARLY_SWITCH_WINDOWS = 500


@dataclass
class EmbedReport:
    encoded: int = 0
    skipped: int = 0
    failed: int = 0
    unreadable: int = 0  # files that could not be read: still pending, tried again next run
    windows: int = 0  # images whose windows were encoded
    seconds: float = 0.0
    index_vectors: int | None = None  # None: the index in service was already up to date
    switched_before_windows: bool = False  # whole images were searchable before the windows pass

    def summary(self) -> str:
        rate = self.encoded / self.seconds if self.seconds else 0.0
        index = "index unchanged" if self.index_vectors is None else f"index rebuilt with {self.index_vectors} vectors"
        if self.switched_before_windows:
            index += ", first switched in before the windows"
        return (
            f"encoded {self.encoded}, skipped {self.skipped}, failed {self.failed}, unreadable {self.unreadable}, "
            f"windows of {self.windows} images "
            f"in {self.seconds:.1f} s ({rate:.1f} images/s); {index}"
        )


def lock_path() -> Path:
    return Path(settings.MEEPO_DATA_DIR) / "embed_catalog.lock"


def embed_catalog(
    *,
    full: bool = False,
    windows: bool = True,
    encoder_factory: Callable[[], Encoder] = get_encoder,
    iter_wrapper: Callable[[Iterable, int], Iterable] = lambda batches, total: batches,
    windows_iter_wrapper: Callable[[Iterable, int], Iterable] = lambda batches, total: batches,
    say: Callable[[str], None] = lambda line: None,
) -> EmbedReport:
    """Encode what needs it in committed batches (a killed run keeps every finished batch), then
    rebuild the index from the vector store and switch it in: before the windows pass too, when it
    is long or the site has no index for this model."""
    started = time.monotonic()
    spec = configured_model()
    layout = configured_layout()
    with exclusive_lock(lock_path(), what="embed_catalog"):
        # Here, not only after a rebuild: a run with nothing to rebuild would leave them for good.
        index_store.remove_leftovers()
        if full:
            ItemImage.objects.update(embedding_state=ItemImage.State.PENDING)
            if windows:
                # Only when this run re-embeds them: --full --no-windows must not drop region search.
                WindowVectors.objects.all().delete()
        todo = list(
            ItemImage.objects.filter(ItemImage.needing_embedding(spec.key)).order_by("id").values_list("id", flat=True)
        )
        report = EmbedReport(skipped=ItemImage.objects.count() - len(todo))
        encoder = encoder_factory() if todo else None
        if encoder is not None:
            batch_size = encoder.batch_size
            batches = [todo[start : start + batch_size] for start in range(0, len(todo), batch_size)]
            with ThreadPoolExecutor(max_workers=2) as pool, ThreadPoolExecutor(encoder.decoders) as decoders:
                decode = partial(_decode_batch, encoder=encoder, decoders=decoders)
                if encoder.decodes_alongside:
                    # The decoders read the files too: in parallel, whatever the storage.
                    loaded = prefetched(batches, lambda images: decode(read_files(images, reader=decoders)), pool)
                else:
                    # Only the reading goes ahead: decoding waits for the cores (Encoder.decodes_alongside).
                    loaded = map(decode, prefetched(batches, read_files, pool))
                for batch in iter_wrapper(loaded, len(todo)):
                    encoded, failed, unreadable = _store_batch(*batch, encoder=encoder)
                    report.encoded += encoded
                    report.failed += failed
                    report.unreadable += unreadable
        windows_todo = images_needing_windows(spec.key, layout.key).count() if windows and layout else 0
        if windows_todo:
            encoder = encoder or encoder_factory()
            if _switch_in_first(spec.key, report, windows_todo=windows_todo, full=full):
                report.index_vectors = rebuild_index_if_stale(
                    spec=spec, layout=layout, force=bool(report.encoded), encoder=encoder
                )
                report.switched_before_windows = report.index_vectors is not None
                if report.switched_before_windows:
                    # The moment a site restarted for a new model can serve it (README, Upgrades).
                    say(f"index switched in with {report.index_vectors} vectors; now windows of {windows_todo} images")
            report.windows = embed_windows(encoder=encoder, layout=layout, iter_wrapper=windows_iter_wrapper)
        rebuilt = rebuild_index_if_stale(
            # Forced where vectors were written since the last switch: re-encoded ones (--full) may
            # differ under the same digest.
            spec=spec,
            layout=layout,
            force=bool(report.windows or (report.encoded and not report.switched_before_windows)),
            encoder=encoder,
        )
        if rebuilt is not None:
            report.index_vectors = rebuilt
    report.seconds = time.monotonic() - started
    return report


def _switch_in_first(model_key: str, report: EmbedReport, *, windows_todo: int, full: bool) -> bool:
    """Whether to switch the index in before the windows, which take some 15 times as long as the
    whole images: when the site has no index for this model, or many new images wait. Not for --full
    of the model in service: its images are searchable already, and it has dropped their windows."""
    if not _serves(model_key):
        return True
    return bool(report.encoded) and windows_todo >= EARLY_SWITCH_WINDOWS and not full


def _serves(model_key: str) -> bool:
    """Whether the index in service was built with this model; if not, the site answers 503."""
    version = index_store.current_version()
    return version is not None and index_store.read_meta(version).get("model_key") == model_key


def _decode_batch(read: tuple[list[ItemImage], list[bytes | str]], *, encoder: Encoder, decoders: ThreadPoolExecutor):
    images, contents = read
    pixels, errors = [], {}
    decoded = decoders.map(partial(_decode, encoder=encoder), contents)
    for image, (image_pixels, error) in zip(images, decoded, strict=True):
        if error:
            errors[image.id] = error
        else:
            pixels.append(image_pixels)
    return images, encoder.stack(pixels) if pixels else None, errors


def _decode(content: bytes | str, *, encoder: Encoder):
    if isinstance(content, str):
        return None, content
    try:
        return encoder.pixels_from_bytes(content), None
    except ImageRejected as error:
        return None, str(error)
    except Exception as error:  # whatever one image does (MemoryError too), the run goes on
        return None, f"the image could not be decoded ({error.__class__.__name__})"


def _store_batch(images: list[ItemImage], batch, errors: dict[int, str], *, encoder: Encoder):
    spec = encoder.spec
    vectors = encoder.encode_pixels(batch) if batch is not None else np.empty((0, encoder.dimension))
    now = timezone.now()
    rows = iter(vectors.astype(np.float16))
    stored, failed, unreadable = [], [], []
    for image in images:
        image.embedded_model, image.embedded_sha256, image.embedded_at = spec.key, image.sha256, now
        if isinstance(errors.get(image.id), Unreadable):
            image.embedding_state, image.embedding_error = ItemImage.State.PENDING, errors[image.id]
            unreadable.append(image.id)
        elif image.id in errors:
            image.embedding_state, image.embedding_error = ItemImage.State.FAILED, errors[image.id]
            failed.append(image.id)
        else:
            image.embedding_state, image.embedding_error = ItemImage.State.EMBEDDED, ""
            stored.append(ImageVector(image=image, model=spec.key, sha256=image.sha256, data=next(rows).tobytes()))
    with transaction.atomic():
        # The image may have been replaced while we encoded it: only bytes still current count.
        current = dict(ItemImage.objects.filter(id__in=[image.id for image in images]).values_list("id", "sha256"))
        images = [image for image in images if current.get(image.id) == image.sha256]
        stored = [vector for vector in stored if current.get(vector.image_id) == vector.sha256]
        ImageVector.objects.filter(image_id__in=failed).delete()
        ImageVector.objects.bulk_create(
            stored, update_conflicts=True, unique_fields=["image"], update_fields=["model", "sha256", "data"]
        )
        ItemImage.objects.bulk_update(
            images, ["embedding_state", "embedding_error", "embedded_model", "embedded_sha256", "embedded_at"]
        )
    return len(stored), len(failed), len(unreadable)


def current_vectors(model_key: str):
    """The vectors the index should hold: this model's, for bytes that are still current."""
    return ImageVector.objects.filter(model=model_key, sha256=F("image__sha256"))


def load_vectors(model_key: str, *, chunk_size: int = 5000) -> tuple[np.ndarray, np.ndarray]:
    ids, rows = [], []
    for image_id, data in (
        current_vectors(model_key).order_by("image_id").values_list("image_id", "data").iterator(chunk_size=chunk_size)
    ):
        ids.append(image_id)
        rows.append(np.frombuffer(data, dtype=np.float16))
    if not rows:
        return np.empty((0, 0), dtype=np.float32), np.empty(0, dtype=np.int64)
    vectors = np.vstack(rows).astype(np.float32)
    # float16 storage rounds a little; re-normalise so inner product stays cosine similarity.
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True).clip(min=1e-12)
    return vectors, np.asarray(ids, dtype=np.int64)


def rebuild_index_if_stale(*, spec, layout: Layout | None, force: bool, encoder: Encoder | None) -> int | None:
    # Taken before the vectors are read: an image changed in between makes the next run rebuild again,
    # never the other way round.
    content = stored_content(spec, layout)
    version = index_store.current_version()
    if not force and version is not None and index_store.read_meta(version).get("content") == content:
        return None
    vectors, ids = load_vectors(spec.key)
    if len(vectors):
        dimension = vectors.shape[1]
    else:
        dimension = (encoder or get_encoder()).dimension
        vectors = np.empty((0, dimension), dtype=np.float32)
    window_set = None
    if layout and current_windows(spec.key, layout.key).exists():
        window_vectors, window_ids, boxes = load_windows(spec, layout)
        window_set = index_store.WindowSet(vectors=window_vectors, ids=window_ids, boxes=boxes, layout=layout.key)
    index_store.build_index(
        vectors=vectors, ids=ids, spec=spec, dimension=dimension, windows=window_set, content=content
    )
    return len(ids)


def stored_content(spec, layout: Layout | None) -> str:
    """A digest of what the index should hold: the model, and which images at which bytes have a vector
    and windows. Counts are not enough: a run killed after an image was replaced and re-encoded, but
    before the index was switched, leaves the same counts with other images."""
    digest = hashlib.sha256(f"{spec.key}\n".encode())
    rows = [current_vectors(spec.key)]
    if layout:
        digest.update(f"windows {layout.key}\n".encode())
        rows.append(current_windows(spec.key, layout.key))
    for queryset in rows:
        digest.update(b"--\n")
        for image_id, sha256 in (
            queryset.order_by("image_id").values_list("image_id", "sha256").iterator(chunk_size=5000)
        ):
            digest.update(f"{image_id} {sha256}\n".encode())
    return digest.hexdigest()
