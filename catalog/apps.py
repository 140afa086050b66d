from django.apps import AppConfig


class CatalogConfig(AppConfig):
    name = "catalog"
    verbose_name = "Catalogue"

    def ready(self):
        from django.conf import settings
        from PIL import Image

        # Pillow checks its own global cap while parsing headers, before ours runs; with the two
        # equal, a cap above Pillow's default (89M pixels) works and a bomb stops at the first check.
        Image.MAX_IMAGE_PIXELS = settings.MEEPO_MAX_IMAGE_PIXELS
