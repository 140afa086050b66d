import ipaddress
import math
import time

from django.conf import settings
from django.core.cache import caches
from django.http import JsonResponse
from django.shortcuts import render
from django.template.defaultfilters import filesizeformat
from django.utils.cache import patch_cache_control

# Room for the multipart envelope and the other form fields around the photo itself.
MULTIPART_SLACK = 64 * 1024

# Every path that runs a search: pages, photo form and API.
SEARCH_PATHS = ("/search", "/api/search", "/api/items/")


def is_api(request) -> bool:
    return request.path.startswith("/api/")


def refuse(request, message: str, status: int, *, title: str = ""):
    if is_api(request):
        return JsonResponse({"error": message}, status=status)
    return render(request, "search/error.html", {"message": message, "title": title}, status=status)


class UploadLimitMiddleware:
    """Refuse an oversized upload from its Content-Length, before Django reads the body."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.method == "POST":
            if "CONTENT_LENGTH" not in request.META and "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", ""):
                # Django reads nothing of a body without a length; say so instead of "no photo".
                return refuse(request, "Send the upload with a Content-Length header (not chunked).", 411)
            try:
                length = int(request.META.get("CONTENT_LENGTH") or 0)
            except ValueError:
                length = 0
            limit = settings.MEEPO_MAX_UPLOAD_BYTES
            if length > limit + MULTIPART_SLACK:
                return refuse(request, f"The upload is larger than {filesizeformat(limit)}.", 413)
        return self.get_response(request)


class RateLimitMiddleware:
    """At most MEEPO_RATE_LIMIT searches per client and window; past that a 429 with Retry-After."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        rate = settings.MEEPO_RATE_LIMIT
        if rate and request.path.startswith(SEARCH_PATHS) and not _photo_already_searched(request):
            wait = seconds_to_wait(client_of(request), *rate)
            if wait:
                response = refuse(
                    request,
                    f"Too many searches from your address; try again in {wait} s.",
                    429,
                    title="Too many searches",
                )
                response["Retry-After"] = str(wait)
                return response
        return self.get_response(request)


def _photo_already_searched(request) -> bool:
    """The results page of a photo search (its redirect, its other pages): the photo's upload counted
    already, and its vector waits in the cache, so these pages cost no model."""
    return request.method in ("GET", "HEAD") and request.path == "/search" and "photo" in request.GET


def client_of(request) -> str:
    address = request.META.get("REMOTE_ADDR", "")
    if settings.MEEPO_BEHIND_PROXY:
        # The proxy appends the address it saw last; earlier entries are the client's to forge.
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")[-1].strip()
        address = forwarded or address
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address
    if parsed.version == 4:
        return str(parsed)
    if parsed.ipv4_mapped:
        return str(parsed.ipv4_mapped)
    # One IPv6 subscriber usually holds a whole /64.
    return str(ipaddress.ip_network(f"{parsed}/64", strict=False))


def seconds_to_wait(client: str, count: int, seconds: int) -> int:
    """Count this request in the client's fixed window; 0 when it is within the limit.

    Reading and writing the count is not atomic across workers, so a burst can slip a few requests
    past the limit; it never counts a request twice.
    """
    now = time.time()
    window = int(now // seconds)
    key = f"searches:{client}:{window}"
    cache = caches["ratelimit"]
    # Not cache.incr: it would store the count with the cache's default timeout, not the window's.
    used = cache.get(key, 0) + 1
    cache.set(key, used, timeout=seconds + 1)
    if used <= count:
        return 0
    return max(1, math.ceil((window + 1) * seconds - now))


class ApiErrorsAsJsonMiddleware:
    """Unknown API paths and wrong methods answer JSON like every other API error."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if (
            is_api(request)
            and response.status_code in (404, 405)
            and not response.get("Content-Type", "").startswith("application/json")
        ):
            if response.status_code == 404:
                return JsonResponse({"error": f"There is no API endpoint {request.path}."}, status=404)
            # Sorted: the framework lists the methods from a set, in a different order in each worker.
            allowed = ", ".join(sorted(response.get("Allow", "").split(", ")))
            replacement = JsonResponse({"error": f"{request.method} is not allowed here; use {allowed}."}, status=405)
            replacement["Allow"] = allowed
            return replacement
        return response


class ApiNotStoredMiddleware:
    """API answers are never stored by browsers or proxies: results change with the catalogue and the
    index, and a text query in a URL is the shopper's business."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if is_api(request):
            patch_cache_control(response, no_store=True)
        return response
