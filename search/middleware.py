from django.conf import settings
from django.http import JsonResponse
from django.shortcuts import render

# Room for the multipart envelope and the other form fields around the photo itself.
MULTIPART_SLACK = 64 * 1024


class UploadLimitMiddleware:
    """Refuse an oversized upload from its Content-Length, before Django reads the body."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.method == "POST":
            try:
                length = int(request.META.get("CONTENT_LENGTH") or 0)
            except ValueError:
                length = 0
            limit = settings.MEEPO_MAX_UPLOAD_BYTES
            if length > limit + MULTIPART_SLACK:
                message = f"The upload is larger than {limit // (1024 * 1024)} MB."
                if request.path.startswith("/api/"):
                    return JsonResponse({"error": message}, status=413)
                return render(request, "search/error.html", {"message": message}, status=413)
        return self.get_response(request)
