from django.apps import AppConfig


class CatalogConfig(AppConfig):
    name = "catalog"
    verbose_name = "Catalogue"

    def ready(self):
        from django.conf import settings
        from django.db.models.signals import post_delete, post_save
        from PIL import Image

        from catalog.models import Item

        post_save.connect(Item.forget_categories, sender=Item)
        post_delete.connect(Item.forget_categories, sender=Item)

        # Pillow checks its own global cap while parsing headers, before ours runs; with the two
        # equal, a cap above Pillow's default (89M pixels) works and a bomb stops at the first check.
        Image.MAX_IMAGE_PIXELS = settings.MEEPO_MAX_IMAGE_PIXELS
