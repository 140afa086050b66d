import os
import tempfile
from pathlib import Path

from django.conf import settings


def _read_umask() -> int:
    current = os.umask(0)  # the only way to read it is to set it: done once, at import
    os.umask(current)
    return current


UMASK = _read_umask()


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
            # mkstemp makes the file 0600: a web server running as another user (nginx's www-data)
            # must read it, as it would a file written the usual way (0666 less the umask).
            os.fchmod(handle.fileno(), 0o666 & ~UMASK)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
