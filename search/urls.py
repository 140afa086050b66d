from django.urls import path

from search import views

app_name = "search"

urlpatterns = [
    path("", views.home, name="home"),
    path("search", views.results, name="results"),
    path("search/photo", views.photo_search, name="photo"),
    path("items/<int:item_id>/", views.item_detail, name="item"),
]
