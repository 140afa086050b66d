from django.db import models

from catalog.models import ItemImage


class ImageVector(models.Model):
    """The vector store: one L2-normalised embedding per catalogue image, kept so that rebuilding
    the index never re-encodes an image."""

    image = models.OneToOneField(ItemImage, on_delete=models.CASCADE, related_name="vector", primary_key=True)
    # Not indexed: nearly every row has the configured model, and SQLite, taking such an index for a
    # selective one, scanned it to find one item's vector (16 ms at 20k items instead of 0.1).
    model = models.CharField(max_length=300)
    # The bytes that were encoded: a vector whose image has changed since is left out of the index.
    sha256 = models.CharField(max_length=64)
    # float16, native byte order of the little-endian machines Meepo runs on.
    data = models.BinaryField()

    def __str__(self) -> str:
        return f"vector of image {self.image_id} ({self.model})"


class WindowVectors(models.Model):
    """The windows of one catalogue image (region search): their boxes and their vectors."""

    image = models.OneToOneField(ItemImage, on_delete=models.CASCADE, related_name="windows", primary_key=True)
    model = models.CharField(max_length=300)
    sha256 = models.CharField(max_length=64)
    # The window layout's key (pipeline/windows.py): a changed layout re-embeds windows only.
    layout = models.CharField(max_length=100)
    # int32 rows of (x, y, w, h) in the image's pixels, and float16 rows of unit vectors, same order.
    boxes = models.BinaryField()
    data = models.BinaryField()

    def __str__(self) -> str:
        return f"windows of image {self.image_id} ({self.model}, {self.layout})"
