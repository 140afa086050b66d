"""Search functions: text, photo and "more like this", one result per active item."""

import contextlib
import ctypes
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
from django.conf import settings
from django.core.cache import cache
from django.db.models import Count, F
from PIL import Image

from catalog.images import ImageRejected
from catalog.models import CATEGORIES_CACHE_KEY, Item, ItemImage
from pipeline.encoder import configured_model, get_encoder
from search.forms import strip_invisible
from search.regions import ImageMatch, aggregate_windows, full_matches, merge
from search.served_index import IndexNotReady, ServedIndex, served_index

MODES = ("full", "region", "both")
# How many window hits to fetch per wanted image: an image has up to about 16 windows.
WINDOW_HITS_PER_IMAGE = 4

logger = logging.getLogger(__name__)


@dataclass
class Hit:
    item: Item
    image: ItemImage
    score: float
    match: str = "full"
    box: tuple[int, int, int, int] | None = None

    @property
    def box_percent(self) -> dict[str, float] | None:
        """The matched region as percentages of the image, to outline it over any rendering size."""
        return box_percent(self.box, self.image)

    @property
    def url(self) -> str:
        """The item page, showing the matched image with the matched region outlined."""
        if self.box is None:
            return self.item.get_absolute_url()
        return f"{self.item.get_absolute_url()}?image={self.image.id}&box={','.join(map(str, self.box))}"


def box_percent(box, image: ItemImage) -> dict[str, float] | None:
    if box is None or not image.width or not image.height:
        return None
    x, y, w, h = box
    return {
        "left": round(100 * x / image.width, 2),
        "top": round(100 * y / image.height, 2),
        "width": round(100 * w / image.width, 2),
        "height": round(100 * h / image.height, 2),
    }


@dataclass
class Results:
    hits: list[Hit]
    total: int


def search_by_vector(
    *,
    vector: np.ndarray,
    limit: int,
    offset: int = 0,
    category: str = "",
    mode: str = "full",
    exclude_item_id: int | None = None,
    text: bool = False,
) -> Results:
    """One result per active item (its best image), best first.

    The index holds images of hidden items too (hiding takes effect at once, without a rebuild), so
    hits are filtered here, widening the search until the page is full or MEEPO_MAX_RESULTS is reached.
    """
    served = served_index()
    if mode != "full" and served.windows is None:
        if mode == "region":
            raise IndexNotReady(
                "Region search is not available: the index has no windows. "
                "Run: python manage.py embed_catalog (with MEEPO_WINDOWS set, without --no-windows)"
            )
        mode = "full"
    wanted = offset + limit
    cap = min(served.size, settings.MEEPO_MAX_RESULTS * 4)
    pool = min(cap, max(100, wanted * 4))
    while True:
        matches = _nearest_images(served, vector, pool, mode, text=text)
        best = _best_match_per_item(matches, category=category, exclude_item_id=exclude_item_id)
        if len(best) >= wanted or pool >= cap:
            break
        pool = min(cap, pool * 4)
    best = best[: settings.MEEPO_MAX_RESULTS]
    total = len(best)
    if pool < cap:
        # The page filled before the search saw every image: how many items it found depends on the
        # page asked for, so count what paging on would rank (the same on every page).
        rankable = _rankable_items().get(category, 0) - (exclude_item_id is not None)
        total = max(total, min(rankable, settings.MEEPO_MAX_RESULTS))
    return Results(hits=_hits(best[offset:wanted]), total=total)


def _rankable_items() -> dict[str, int]:
    """Active items with an embedded image, per category ("" for all). Cached like the categories,
    under their generation: a COUNT over every item would cost more than the search."""
    key = f"{CATEGORIES_CACHE_KEY}:rankable:{cache.get(CATEGORIES_CACHE_KEY, '')}"
    counts = cache.get(key)
    if counts is None:
        items = Item.objects.filter(
            active=True,
            images__embedding_state=ItemImage.State.EMBEDDED,
            images__embedded_model=configured_model().key,
        )
        per_category = items.order_by().values("category").annotate(count=Count("id", distinct=True))
        counts = {row["category"]: row["count"] for row in per_category}
        counts[""] = items.values("id").distinct().count()
        cache.set(key, counts, timeout=60)  # embed_catalog sends no signal: its items count within a minute
    return counts


def _nearest_images(served: ServedIndex, vector: np.ndarray, pool: int, mode: str, *, text: bool) -> list[ImageMatch]:
    found = []
    if mode in ("full", "both"):
        found.append(full_matches(*served.nearest(vector, pool, text=text)))
    if mode in ("region", "both"):
        ids, boxes, scores = served.windows.nearest(vector, pool * WINDOW_HITS_PER_IMAGE, text=text)
        found.append(
            aggregate_windows(ids, boxes, scores, served.windows.counts, weights=settings.MEEPO_REGION_WEIGHTS)
        )
    return merge(*found)


def _best_match_per_item(matches: list[ImageMatch], *, category: str, exclude_item_id: int | None) -> list[ImageMatch]:
    # Only ids here: building model instances for every candidate cost more than the vector search.
    # No ORDER BY: the matches give the order.
    images = ItemImage.objects.filter(id__in=[match.image_id for match in matches], item__active=True).order_by()
    if category:
        images = images.filter(item__category=category)
    if exclude_item_id is not None:
        images = images.exclude(item_id=exclude_item_id)
    item_of = dict(images.values_list("id", "item_id"))
    best, seen = [], set()
    for match in matches:
        item_id = item_of.get(match.image_id)
        if item_id is None or item_id in seen:
            continue
        seen.add(item_id)
        best.append(match)
    return best


def _hits(matches: list[ImageMatch]) -> list[Hit]:
    images = ItemImage.objects.select_related("item").order_by().in_bulk([match.image_id for match in matches])
    return [
        Hit(item=image.item, image=image, score=match.score, match=match.match, box=match.box)
        for match in matches
        if (image := images.get(match.image_id)) is not None
    ]


class _TextVectorCache:
    """Shoppers repeat queries ("fork", "red dress"); the text tower is the slow part of a text search."""

    def __init__(self, size: int = 2048):
        self.size = size
        self.entries: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, query: str) -> np.ndarray:
        encoder = get_encoder()
        key = (encoder.spec.key, query)
        with self.lock:
            if key in self.entries:
                self.entries.move_to_end(key)
                return self.entries[key]
        vector = encoder.encode_texts([query])[0]
        with self.lock:
            self.entries[key] = vector
            while len(self.entries) > self.size:
                self.entries.popitem(last=False)
        return vector


text_vectors = _TextVectorCache()


def warm_up() -> None:
    """Load the model and open the index before a web worker takes requests (deploy/gunicorn.conf.py):
    lazily, the first two searches after every worker start or recycling took 5.5-7 s (ViT-B-32)."""
    for part, load in (("model", _warm_up_model), ("index", served_index)):
        try:
            load()
        except Exception as error:  # a worker that cannot boot would take the site down: let searches say why
            logger.warning("The search %s is not loaded (%s); the first search will try again.", part, error)
    _give_back_freed_memory()


def _warm_up_model() -> None:
    # Both towers: each one's first call sets up its kernels (5-7 ms more for a first photo query on a
    # CPU; on a GPU, CUDA's libraries load on first use).
    encoder = get_encoder()
    encoder.encode_texts(["a photo"])
    encoder.encode_images([Image.new("RGB", (encoder.image_size, encoder.image_size), "white")])


def _give_back_freed_memory() -> None:
    """Return the C heap's free pages to the system. Loading ViT-B-32 leaves 120-230 MB of freed
    weights in a worker's heap (the fp32 image tower before bf16, plain weights before packing),
    which one query at a time never fills again: a worker kept 906-921 MB of anonymous memory after
    120 queries instead of 1,041-1,138, at the same p50s. Not for embed_catalog, whose batches refill
    the heap: trimmed, they ran 15-25% slower."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def normalise_query(query: str) -> str:
    """Words separated by single spaces, without invisible characters around them (a zero-width
    space pasted along with the words is no query)."""
    return " ".join(strip_invisible(query).split())


def search_by_text(*, query: str, limit: int, offset: int = 0, category: str = "", regions: bool = False) -> Results:
    served_index()  # fail with the operator's message before loading the model
    vector = text_vectors.get(normalise_query(query).lower())
    mode = "both" if regions else "full"
    return search_by_vector(vector=vector, limit=limit, offset=offset, category=category, mode=mode, text=True)


def image_query_vector(image) -> np.ndarray:
    return get_encoder().encode_images([image])[0]


def item_vector(item: Item) -> np.ndarray | None:
    """The stored vector of the item's first embedded image, else its first image encoded now: a
    photo just added or replaced in the admin has no vector until the next embed_catalog."""
    from pipeline.models import ImageVector

    spec = configured_model()
    row = (
        ImageVector.objects.filter(image__item=item, model=spec.key, sha256=F("image__sha256"))
        .order_by("image__position", "image_id")
        .values_list("data", flat=True)
        .first()
    )
    if row is None:
        return _encoded_now(item.images.order_by("position", "id").first())
    vector = np.frombuffer(row, dtype=np.float16).astype(np.float32)
    return vector / max(float(np.linalg.norm(vector)), 1e-12)


def _encoded_now(image: ItemImage | None) -> np.ndarray | None:
    if image is None:
        return None
    encoder = get_encoder()
    try:
        pixels = encoder.pixels_from_bytes(image.read_bytes())
    except (OSError, ImageRejected):  # missing or unreadable: embed_catalog marks it failed
        return None
    return encoder.encode_pixels(encoder.stack([pixels]))[0]


def similar_items(*, item: Item, limit: int, offset: int = 0, category: str = "") -> Results:
    served_index()  # fail with the operator's message before encoding a photo
    vector = item_vector(item)
    if vector is None:
        return Results(hits=[], total=0)
    return search_by_vector(vector=vector, limit=limit, offset=offset, category=category, exclude_item_id=item.id)
