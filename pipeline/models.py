from django.db import models

from catalog.models import ItemImage


class ImageVector(models.Model):
    """The vector store: one L2-normalised embedding per catalogue image, kept so that rebuilding
    the index never re-encodes an image."""

    image = models.OneToOneField(ItemImage, on_delete=models.CASCADE, related_name="vector", primary_key=True)
    model = models.CharField(max_length=300, db_index=True)
    # The bytes that were encoded: a vector whose image has changed since is left out of the index.
    sha256 = models.CharField(max_length=64)
    # float16, native byte order of the little-endian machines Meepo runs on.
    data = models.BinaryField()

    def __str__(self) -> str:
        return f"vector of image {self.image_id} ({self.model})"
