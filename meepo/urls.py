from django.conf import settings
from django.contrib import admin
from django.urls import include, path, re_path
from django.views.static import serve

from search import views
from search.api import api

admin.site.site_header = "Meepo catalogue"
admin.site.site_title = "Meepo"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", api.urls),
    path("healthz", views.healthz, name="healthz"),
    path("", include("search.urls")),
]


def media(request, path):
    return serve(request, path, document_root=settings.MEDIA_ROOT)


if settings.MEEPO_SERVE_MEDIA:
    urlpatterns.append(re_path(r"^media/(?P<path>.*)$", media))
