import re

from django.conf import settings
from django.contrib import admin
from django.templatetags.static import static
from django.urls import include, path, re_path
from django.utils.cache import patch_cache_control
from django.views.generic import RedirectView
from django.views.static import serve

from search import views
from search.api import api

admin.site.site_header = "Meepo catalogue"
admin.site.site_title = "Meepo"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", api.urls),
    path("healthz", views.healthz, name="healthz"),
    # Asked for by browsers on pages without an icon of their own (the admin, JSON).
    path("favicon.ico", RedirectView.as_view(url=static("img/favicon.ico"))),
    path("", include("search.urls")),
]


# Under /api/ these answer in JSON (search/views.py); elsewhere Django's pages.
handler400 = "search.views.bad_request"
handler500 = "search.views.server_error"

# Catalogue images and thumbnails are named by the SHA-256 of their bytes (catalog/models.py): what
# a name shows never changes, so browsers may keep it.
CONTENT_ADDRESSED = re.compile(r"(catalog|thumbs)/[0-9a-f]{2}/[0-9a-f]{64}\.\w+")


def media(request, path):
    response = serve(request, path, document_root=settings.MEDIA_ROOT)
    if CONTENT_ADDRESSED.fullmatch(path):
        patch_cache_control(response, public=True, max_age=365 * 24 * 3600, immutable=True)
    return response


if settings.MEEPO_SERVE_MEDIA:
    urlpatterns.append(re_path(r"^media/(?P<path>.*)$", media))
