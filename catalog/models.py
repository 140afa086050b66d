import uuid

from django.conf import settings
from django.core.cache import cache
from django.core.files.storage import default_storage
from django.db import models, transaction
from django.db.models import F, Q
from django.urls import reverse

from catalog.images import ImageInfo, make_thumbnail, read_image
from catalog.storage import save_atomically

CATEGORIES_CACHE_KEY = "catalog:categories"


class Item(models.Model):
    title = models.CharField(max_length=300)
    description = models.TextField(blank=True)
    category = models.CharField(max_length=100, blank=True, db_index=True)
    price = models.DecimalField(max_digits=12, decimal_places=2, null=True, blank=True)
    currency = models.CharField(max_length=3, blank=True, help_text="ISO 4217 code, e.g. EUR")
    url = models.URLField("product URL", max_length=1000, blank=True)
    # NULL rather than "" so that many items can have no SKU while set SKUs stay unique.
    sku = models.CharField("SKU", max_length=100, unique=True, null=True, blank=True)
    tags = models.CharField(max_length=500, blank=True, help_text="Separated by commas")
    active = models.BooleanField(default=True, help_text="Inactive items never appear in search results")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        # The storefront's newest items: without it, every home page sorted the whole catalogue
        # (10-12 ms at 20k items).
        indexes = [models.Index(fields=["-created_at", "-id"], condition=Q(active=True), name="item_newest_active")]

    def __str__(self) -> str:
        return self.title

    def save(self, *args, **kwargs):
        self.sku = self.sku or None
        super().save(*args, **kwargs)

    def get_absolute_url(self) -> str:
        return reverse("search:item", args=[self.pk])

    @property
    def tag_list(self) -> list[str]:
        return [tag.strip() for tag in self.tags.split(",") if tag.strip()]

    @property
    def primary_image(self) -> "ItemImage | None":
        images = list(self.images.all())
        return images[0] if images else None

    @staticmethod
    def categories() -> list[str]:
        """The categories of active items, the search forms' choices. Cached, under a generation
        that every saved, deleted, hidden or shown item renews: a DISTINCT over every item took
        15-21 ms of each page at 20k items on SQLite, 7-8 ms on PostgreSQL."""
        key = f"{CATEGORIES_CACHE_KEY}:{cache.get(CATEGORIES_CACHE_KEY, '')}"
        categories = cache.get(key)
        if categories is None:
            categories = list(
                Item.objects.filter(active=True)
                .exclude(category="")
                .values_list("category", flat=True)
                .distinct()
                .order_by("category")
            )
            cache.set(key, categories, timeout=60)  # bulk changes that send no signal show within a minute
        return categories

    @staticmethod
    def forget_categories(**signal) -> None:
        _renew_categories()
        # Again once the change is committed: a page rendered meanwhile has cached the categories
        # from before it, under the generation renewed first.
        transaction.on_commit(_renew_categories)


def _renew_categories() -> None:
    cache.set(CATEGORIES_CACHE_KEY, uuid.uuid4().hex, timeout=None)


class ItemImage(models.Model):
    class State(models.TextChoices):
        PENDING = "pending", "pending"
        EMBEDDED = "embedded", "embedded"
        FAILED = "failed", "failed"

    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="images")
    file = models.FileField(upload_to="catalog", max_length=300, blank=True)
    source_url = models.URLField(max_length=2000, blank=True)
    sha256 = models.CharField(max_length=64, db_index=True, editable=False)
    width = models.PositiveIntegerField(default=0, editable=False)
    height = models.PositiveIntegerField(default=0, editable=False)
    position = models.PositiveIntegerField(default=0)

    embedding_state = models.CharField(max_length=10, choices=State, default=State.PENDING, db_index=True)
    embedding_error = models.TextField(blank=True, editable=False)
    # Which model and which bytes the last attempt (success or failure) was made with.
    embedded_model = models.CharField(max_length=300, blank=True, editable=False)
    embedded_sha256 = models.CharField(max_length=64, blank=True, editable=False)
    embedded_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["position", "id"]

    def __str__(self) -> str:
        return f"{self.item.title} #{self.position}"

    @staticmethod
    def needing_embedding(model_key: str) -> Q:
        """Images never tried, changed since, or tried with another model (a failure is not retried
        until the bytes or the model change)."""
        return (
            Q(embedding_state=ItemImage.State.PENDING) | ~Q(embedded_model=model_key) | ~Q(embedded_sha256=F("sha256"))
        )

    @property
    def thumbnail_name(self) -> str:
        return f"thumbs/{self.sha256[:2]}/{self.sha256}.webp"

    @property
    def image_url(self) -> str:
        return self.file.url if self.file else self.source_url

    @property
    def thumbnail_url(self) -> str:
        return default_storage.url(self.thumbnail_name) if self.sha256 else self.image_url

    def attach(self, data: bytes) -> ImageInfo:
        """Validate image bytes, store them (content-addressed, so re-imports write nothing new),
        make the thumbnail once, and mark the image for embedding if the bytes changed."""
        info, pixels = read_image(data, max_pixels=settings.MEEPO_MAX_IMAGE_PIXELS)
        name = f"catalog/{info.sha256[:2]}/{info.sha256}.{info.extension}"
        save_atomically(name, data)
        self.file.name = name
        if info.sha256 != self.sha256:
            self.sha256 = info.sha256
            self.width, self.height = info.width, info.height
            self.embedding_state = self.State.PENDING
            self.embedding_error = ""
        if not default_storage.exists(self.thumbnail_name):
            save_atomically(self.thumbnail_name, make_thumbnail(pixels, size=settings.MEEPO_THUMBNAIL_SIZE))
        return info

    def read_bytes(self) -> bytes:
        with self.file.open("rb") as handle:
            return handle.read()
