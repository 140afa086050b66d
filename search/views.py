import base64
import io
import math
import secrets

import numpy as np
from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.http.multipartparser import MultiPartParserError
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views import defaults
from django.views.decorators.http import require_POST, require_safe

from catalog.models import Item, ItemImage
from pipeline.encoder import ModelUnavailable
from search import searcher
from search.forms import PhotoSearchForm, TextSearchForm
from search.middleware import is_api
from search.queries import QueryRejected, parse_box, query_image, upload_bytes, url_bytes

PHOTO_CACHE_PREFIX = "photo-query:"


def _latest():
    return Item.objects.filter(active=True).prefetch_related("images")[: settings.MEEPO_PAGE_SIZE]


@require_safe
def home(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "search/home.html",
        {
            "form": TextSearchForm(),
            "photo_form": PhotoSearchForm(),
            "categories": Item.categories(),
            "latest": _latest(),
        },
    )


@require_safe
def results(request: HttpRequest) -> HttpResponse:
    form = TextSearchForm(request.GET)
    context = {"form": form, "photo_form": PhotoSearchForm(), "categories": Item.categories(), "hits": [], "query": ""}
    if not form.is_valid():
        context["error"] = " ".join(message for errors in form.errors.values() for message in errors)
        # Back in the search box, to be corrected rather than typed again.
        context["query"] = form.data.get("q", "")
        return render(request, "search/results.html", context, status=400)
    query = searcher.normalise_query(form.cleaned_data["q"])
    photo = form.cleaned_data["photo"]
    category = form.cleaned_data["category"]
    page = form.cleaned_data["page"]
    if not query and not photo:
        return redirect("search:home")
    size = settings.MEEPO_PAGE_SIZE
    offset = (page - 1) * size
    context.update(query=query, category=category, page=page)
    try:
        if photo:
            cached = cache.get(PHOTO_CACHE_PREFIX + photo)
            if cached is None:
                context["error"] = "This photo search has expired. Search with the photo again."
                return render(request, "search/results.html", context, status=404)
            source = cached.get("source")
            context.update(photo=photo, photo_preview=cached["preview"], mode=cached["mode"], source=source)
            vector = np.frombuffer(cached["vector"], dtype=np.float32)
            found = searcher.search_by_vector(
                vector=vector,
                limit=size,
                offset=offset,
                category=category,
                mode=cached["mode"],
                # A search with an item's own photo would find that item first: the shopper is on its page.
                exclude_item_id=source["item_id"] if source else None,
            )
        else:
            regions = form.cleaned_data["regions"]
            context["regions"] = regions
            found = searcher.search_by_text(query=query, limit=size, offset=offset, category=category, regions=regions)
    except (searcher.IndexNotReady, ModelUnavailable) as error:
        context["error"] = str(error)
        return render(request, "search/results.html", context, status=503)
    pages = max(1, math.ceil(found.total / size))
    context.update(hits=found.hits, total=found.total, pages=pages, page_numbers=_page_window(page, pages))
    # A page past the last one (an old link, an index that shrank) links to the last page instead.
    past_the_end = found.total > 0 and page > pages
    return render(request, "search/results.html", context, status=404 if past_the_end else 200)


def _page_window(page: int, pages: int, width: int = 2) -> list[int]:
    return list(range(max(1, page - width), min(pages, page + width) + 1))


@require_POST
def photo_search(request: HttpRequest) -> HttpResponse:
    """Upload or URL in, redirect to a results page that can be reloaded and paginated."""
    form = PhotoSearchForm(request.POST, request.FILES)
    context = {"form": TextSearchForm(), "photo_form": form, "categories": Item.categories(), "latest": _latest()}
    if not form.is_valid():
        context["photo_error"] = " ".join(message for errors in form.errors.values() for message in errors)
        return render(request, "search/home.html", context, status=400)
    data = form.cleaned_data
    try:
        box = parse_box(data["box"])
        searcher.served_index()
        source = None
        if data["image"]:
            photo = upload_bytes(data["image"])
        elif data["item_image"]:
            item_image, photo = _catalogue_image(data["item_image"])
            source = {"item_id": item_image.item_id, "title": item_image.item.title, "part": box is not None}
        else:
            photo = url_bytes(data["url"])
        image = query_image(photo, box=box, remove_text=data["remove_text"], enhance=data["enhance"])
        vector = searcher.image_query_vector(image)
    except QueryRejected as error:
        context["photo_error"] = str(error)
        return render(request, "search/home.html", context, status=400)
    except (searcher.IndexNotReady, ModelUnavailable) as error:
        context["photo_error"] = str(error)
        return render(request, "search/home.html", context, status=503)
    token = secrets.token_urlsafe(12)
    cache.set(
        PHOTO_CACHE_PREFIX + token,
        {
            "vector": vector.astype(np.float32).tobytes(),
            "preview": _preview(image),
            "mode": data["mode"],
            "source": source,
        },
    )
    return redirect(f"{reverse('search:results')}?photo={token}")


def _catalogue_image(image_id: int):
    """The catalogue image and its photo, for a search started from an item page."""
    image = ItemImage.objects.filter(id=image_id, item__active=True).select_related("item").first()
    if image is None:
        raise QueryRejected("That catalogue image does not exist.")
    try:
        return image, image.read_bytes()
    except OSError:
        raise QueryRejected("That catalogue image cannot be read.") from None


def _preview(image) -> str:
    """A small data: URL of the query photo, so the results page can show what was searched."""
    preview = image.copy()
    preview.thumbnail((160, 160))
    buffer = io.BytesIO()
    preview.save(buffer, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


@require_safe
def item_detail(request: HttpRequest, item_id: int) -> HttpResponse:
    item = get_object_or_404(Item.objects.prefetch_related("images"), id=item_id, active=True)
    images = list(item.images.all())
    shown, outline = _matched_region(request, images)
    context = {
        "item": item,
        "images": images,
        "shown_image": shown,
        "outline": outline,
        "form": TextSearchForm(),
        "photo_form": PhotoSearchForm(),
        "similar": [],
        "similar_error": "",
    }
    try:
        context["similar"] = searcher.similar_items(item=item, limit=12).hits
    except (searcher.IndexNotReady, ModelUnavailable) as error:
        context["similar_error"] = str(error)
    return render(request, "search/item.html", context)


def _matched_region(request: HttpRequest, images: list[ItemImage]):
    """The image to show first and, when the shopper came from a region match, the region to
    outline on it (?image=ID&box=x,y,w,h; anything invalid is ignored: it only changes the view)."""
    shown = images[0] if images else None
    try:
        wanted = int(request.GET.get("image", ""))
        box = parse_box(request.GET.get("box"))
    except (ValueError, QueryRejected):
        return shown, None
    for image in images:
        if image.id == wanted:
            inside = box and box[0] >= 0 and box[1] >= 0 and box[0] + box[2] <= image.width
            inside = inside and box[1] + box[3] <= image.height
            return image, searcher.box_percent(box, image) if inside else None
    return shown, None


@require_safe
def healthz(request: HttpRequest) -> JsonResponse:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    health = {"status": "ok", "index": True}
    try:
        searcher.served_index()
    except searcher.IndexNotReady as error:
        # Still 200: the site is up, and says why searches cannot run (no index yet, another model).
        health.update(index=False, index_error=str(error))
    return JsonResponse(health)


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    """Django's 400 for a request it cannot read (a broken multipart body, too many fields): in JSON
    under /api/."""
    if not is_api(request):
        return defaults.bad_request(request, exception)
    if isinstance(exception, MultiPartParserError):
        message = f"The upload cannot be read as multipart/form-data: {exception}"
    else:
        message = "The request is malformed or too large to read."
    return JsonResponse({"error": message}, status=400)


def server_error(request: HttpRequest) -> HttpResponse:
    """Django's 500, after it has logged the error: in JSON under /api/, without the details."""
    if is_api(request):
        return JsonResponse({"error": "Something went wrong on our side; it has been logged."}, status=500)
    return defaults.server_error(request)
