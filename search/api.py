"""The JSON API, validated and documented by django-ninja (schema at /api/openapi.json)."""

import time
from functools import wraps
from typing import Annotated, Literal

from django.conf import settings
from django.db.models import Count, Q
from django.http import HttpRequest
from ninja import File, Form, NinjaAPI, Path, Query, Schema
from ninja.decorators import decorate_view
from ninja.errors import HttpError, ValidationError
from ninja.files import UploadedFile
from pydantic import AfterValidator, Field
from pydantic_core import PydanticCustomError

from catalog.models import Item, ItemImage
from pipeline import index as index_store
from pipeline.encoder import ModelUnavailable, configured_model, loaded_encoder
from search import searcher
from search.queries import QueryRejected, parse_box, query_image, upload_bytes, url_bytes

api = NinjaAPI(
    title="Meepo",
    version="1.0",
    description="Semantic image search over a shop catalogue: text, photo and photo-URL queries.",
    urls_namespace="api",
)


class ErrorOut(Schema):
    error: str


def _without_nul(text: str) -> str:
    # NUL never belongs in a query, and PostgreSQL refuses it in a string (a 500, not a 400).
    if "\x00" in text:
        raise PydanticCustomError("nul_character", "String should not contain NUL characters")
    return text


Text = Annotated[str, AfterValidator(_without_nul)]


class ResultOut(Schema):
    item_id: int
    title: str
    score: float
    url: str = Field(description="the item's page on this site")
    product_url: str = Field(description="the item's page in the shop, if the catalogue gives one")
    image_url: str
    thumbnail_url: str
    category: str
    price: str | None = Field(description="decimal as a string, e.g. '12.50'")
    currency: str
    match: Literal["full", "region"] = Field(description="whether the whole image or one region of it matched")
    box: list[int] | None = Field(description="for region matches: [x, y, w, h] in the item image's pixels")
    width: int = Field(description="the matched item image's width in pixels")
    height: int = Field(description="the matched item image's height in pixels")


class ModelOut(Schema):
    name: str
    trained: bool = Field(description="false when results come from an untrained model (demo/tests)")


class SearchOut(Schema):
    results: list[ResultOut]
    total: int
    limit: int
    offset: int
    processing_time_ms: float
    model: ModelOut


class PageParams(Schema):
    limit: int = Field(24, ge=1, le=100)
    offset: int = Field(0, ge=0, le=10_000)
    category: Text = Field("", max_length=100, description="only items of this category (400 if there is none)")


class TextSearchParams(PageParams):
    q: Text = Field(..., min_length=1, max_length=settings.MEEPO_MAX_QUERY_LENGTH, description="what to look for")
    regions: bool = Field(False, description="let the text match regions of catalogue images too")


class PhotoOptions(Schema):
    # max_length inside the union, so that pydantic checks it as the length of a string.
    box: Annotated[str, Field(max_length=80), AfterValidator(_without_nul)] | None = Field(
        None, description="search only this part: x,y,w,h in the photo's pixels"
    )
    mode: Literal["full", "region", "both"] = Field(
        "both", description="match whole catalogue images, regions of them, or both"
    )
    remove_text: bool = Field(False, description="remove overlaid text (memes, watermarks) first")
    enhance: bool = Field(False, description="raise contrast, brightness and sharpness first")


class UrlQuery(PhotoOptions):
    url: Text = Field(..., min_length=1, max_length=2000, description="an http(s) URL of a photo")


ITEM_ID_MAX = 2**63 - 1  # item ids are 64-bit (BigAutoField)

# The error answers each endpoint can really give. 411, 413 and 429 come from search/middleware.py
# (a chunked upload, an oversized upload, MEEPO_RATE_LIMIT); 503 until an index is built.
SEARCH_ERRORS = {400: ErrorOut, 429: ErrorOut, 503: ErrorOut}
UPLOAD_ERRORS = {**SEARCH_ERRORS, 411: ErrorOut, 413: ErrorOut}


@api.exception_handler(ValidationError)
def validation_error(request: HttpRequest, error: ValidationError):
    messages = []
    for problem in error.errors:
        field = ".".join(str(part) for part in problem.get("loc", [])[1:]) or "request"
        messages.append(f"{field}: {problem.get('msg', 'invalid value')}")
    return api.create_response(request, {"error": "; ".join(messages)}, status=400)


@api.exception_handler(HttpError)
def http_error(request: HttpRequest, error: HttpError):
    return api.create_response(request, {"error": error.message}, status=error.status_code)


@api.exception_handler(QueryRejected)
def query_rejected(request: HttpRequest, error: QueryRejected):
    return api.create_response(request, {"error": str(error)}, status=400)


@api.exception_handler(searcher.IndexNotReady)
@api.exception_handler(ModelUnavailable)
def not_ready(request: HttpRequest, error: Exception):
    return api.create_response(request, {"error": str(error)}, status=503)


def _results(request: HttpRequest, found: searcher.Results, *, limit: int, offset: int, started: float):
    """The answer as a response, built here: ninja's validation of it against SearchOut cost about 1 ms
    a search (issue #4). SearchOut still documents it, and search/tests/test_fuzz.py checks that
    every answer conforms."""
    spec = configured_model()
    payload = {
        "results": [
            {
                "item_id": hit.item.id,
                "title": hit.item.title,
                # A cosine's range, as documented, though a share bonus (MEEPO_REGION_WEIGHTS)
                # lifts the best region scores past 1.
                "score": round(min(max(hit.score, -1.0), 1.0), 4),
                "url": request.build_absolute_uri(hit.item.get_absolute_url()),
                "product_url": hit.item.url,
                "image_url": request.build_absolute_uri(hit.image.image_url),
                "thumbnail_url": request.build_absolute_uri(hit.image.thumbnail_url),
                "category": hit.item.category,
                "price": None if hit.item.price is None else str(hit.item.price),
                "currency": hit.item.currency,
                "match": hit.match,
                "box": list(hit.box) if hit.box else None,
                "width": hit.image.width,
                "height": hit.image.height,
            }
            for hit in found.hits
        ],
        "total": found.total,
        "limit": limit,
        "offset": offset,
        "processing_time_ms": round((time.perf_counter() - started) * 1000, 2),
        "model": {"name": spec.name, "trained": spec.trained},
    }
    return api.create_response(request, payload, status=200)


def _check_category(category: str) -> None:
    """An unknown category is a mistake (a typo, a renamed category), not a search with no results."""
    if category and not Item.objects.filter(active=True, category=category).exists():
        raise HttpError(400, f"category: there is no category {category!r}.")


def get_and_head(path: str, **options):
    """A GET endpoint that answers HEAD too (uptime monitors use it). HEAD is left out of the
    schema: it answers as GET does, without the body, and documenting it twice would repeat the
    operation's id."""

    def register(view):
        api.api_operation(["HEAD"], path, response=options["response"], include_in_schema=False)(view)
        return api.get(path, **options)(view)

    return register


@get_and_head("/search", response={200: SearchOut, **SEARCH_ERRORS}, summary="Search by text")
def search_text(request: HttpRequest, params: Query[TextSearchParams]):
    started = time.perf_counter()
    query = searcher.normalise_query(params.q)
    if not query:
        raise HttpError(400, "q: the query is empty.")
    _check_category(params.category)
    found = searcher.search_by_text(
        query=query, limit=params.limit, offset=params.offset, category=params.category, regions=params.regions
    )
    return _results(request, found, limit=params.limit, offset=params.offset, started=started)


def _photo_search(request: HttpRequest, read_photo, options: PhotoOptions, params: PageParams, started: float):
    _check_category(params.category)
    box = parse_box(options.box)
    searcher.served_index()
    image = query_image(read_photo(), box=box, remove_text=options.remove_text, enhance=options.enhance)
    found = searcher.search_by_vector(
        vector=searcher.image_query_vector(image),
        limit=params.limit,
        offset=params.offset,
        category=params.category,
        mode=options.mode,
    )
    return _results(request, found, limit=params.limit, offset=params.offset, started=started)


@api.post("/search/image", response={200: SearchOut, **UPLOAD_ERRORS}, summary="Search with an uploaded photo")
def search_image(
    request: HttpRequest, params: Query[PageParams], image: File[UploadedFile], options: Form[PhotoOptions]
):
    started = time.perf_counter()
    return _photo_search(request, lambda: upload_bytes(image), options, params, started)


def json_body_only(run):
    """415 for any other body, before it is parsed: ninja reads any body as JSON, and a form on
    another site can post text/plain, form-encoded or multipart bodies without a CORS preflight;
    it must not be able to make this server fetch URLs."""

    @wraps(run)
    def check(request: HttpRequest, *args, **kwargs):
        if request.content_type != "application/json":
            return api.create_response(
                request, {"error": "Send the body as JSON (Content-Type: application/json)."}, status=415
            )
        return run(request, *args, **kwargs)

    return check


@api.post(
    "/search/url",
    response={200: SearchOut, **UPLOAD_ERRORS, 415: ErrorOut},
    summary="Search with the URL of a photo",
)
@decorate_view(json_body_only)
def search_url(request: HttpRequest, body: UrlQuery, params: Query[PageParams]):
    started = time.perf_counter()
    return _photo_search(request, lambda: url_bytes(body.url), body, params, started)


@get_and_head(
    "/items/{item_id}/similar",
    response={200: SearchOut, **SEARCH_ERRORS, 404: ErrorOut},
    summary="Items that look like this one",
)
def similar(
    request: HttpRequest,
    params: Query[PageParams],
    item_id: int = Path(..., ge=1, le=ITEM_ID_MAX, description="the id of an active item"),
):
    started = time.perf_counter()
    item = Item.objects.filter(id=item_id, active=True).first()
    if item is None:
        raise HttpError(404, f"There is no item {item_id}.")
    _check_category(params.category)
    found = searcher.similar_items(item=item, limit=params.limit, offset=params.offset, category=params.category)
    return _results(request, found, limit=params.limit, offset=params.offset, started=started)


class CountsOut(Schema):
    items: int
    active_items: int
    images: int
    embedded: int
    pending: int
    failed: int


class StatusModelOut(Schema):
    name: str
    pretrained: str | None
    trained: bool
    loaded: bool
    device: str | None
    dimension: int | None


class StatusWindowsOut(Schema):
    layout: str
    images: int
    vectors: int
    index_type: str
    bytes_per_vector: float


class StatusIndexOut(Schema):
    type: str | None
    vectors: int
    built_at: str | None
    model: str | None
    matches_model: bool
    windows: StatusWindowsOut | None = Field(description="the windows index of region search, if built")


class StatusOut(Schema):
    counts: CountsOut
    model: StatusModelOut
    index: StatusIndexOut


@get_and_head("/status", response=StatusOut, summary="Catalogue, model and index status")
def status(request: HttpRequest):
    states = ItemImage.objects.aggregate(
        images=Count("id"),
        embedded=Count("id", filter=Q(embedding_state=ItemImage.State.EMBEDDED)),
        pending=Count("id", filter=Q(embedding_state=ItemImage.State.PENDING)),
        failed=Count("id", filter=Q(embedding_state=ItemImage.State.FAILED)),
    )
    spec = configured_model()
    encoder = loaded_encoder()
    version = index_store.current_version()
    meta = index_store.read_meta(version) if version else {}
    return {
        "counts": {"items": Item.objects.count(), "active_items": Item.objects.filter(active=True).count(), **states},
        "model": {
            "name": spec.name,
            "pretrained": spec.pretrained,
            "trained": spec.trained,
            "loaded": encoder is not None,
            "device": encoder.device if encoder else None,
            "dimension": encoder.dimension if encoder else meta.get("dimension"),
        },
        "index": {
            "type": meta.get("index_type"),
            "vectors": meta.get("vectors", 0),
            "built_at": meta.get("built_at"),
            "model": meta.get("model_key"),
            "matches_model": meta.get("model_key") == spec.key,
            "windows": meta.get("windows"),
        },
    }
