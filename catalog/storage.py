import os
import tempfile
from pathlib import Path

from django.conf import settings


def save_atomically(name: str, data: bytes) -> None:
    """Write a media file so that a crash leaves either nothing or the whole file under its name.

    Django's storage writes in place, and a truncated file under a content-addressed name would
    never be rewritten, so files go through a temporary name and os.replace.
    """
    path = Path(settings.MEDIA_ROOT) / name
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
