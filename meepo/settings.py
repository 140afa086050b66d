"""Meepo's only settings file: everything an operator changes comes from the environment.

Every MEEPO_* variable is listed in README.md ("Settings").
"""

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_str(name: str, default: str) -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, not {raw!r}.")


def env_int(name: str, default: int, *, minimum: int = 0) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a whole number, not {raw!r}.") from None
    if value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, not {value}.")
    return value


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, not {raw!r}.") from None


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [part.strip() for part in raw.split(",") if part.strip()]


def env_rate(name: str, default: str) -> tuple[int, int] | None:
    """'60/minute' -> (60, 60); 'off' -> None."""
    raw = env_str(name, default).strip().lower()
    if raw in {"off", "0", ""}:
        return None
    seconds = {"second": 1, "minute": 60, "hour": 3600}
    count, _, unit = raw.partition("/")
    if not count.isdigit() or int(count) < 1 or unit not in seconds:
        raise ImproperlyConfigured(f"{name} must look like 60/minute (per second, minute or hour) or off, not {raw!r}.")
    return int(count), seconds[unit]


def env_choice(name: str, default: str, choices: set[str]) -> str:
    value = env_str(name, default).strip().lower()
    if value not in choices:
        raise ImproperlyConfigured(f"{name} must be one of {', '.join(sorted(choices))}, not {value!r}.")
    return value


DEBUG = env_bool("MEEPO_DEBUG", False)

# Everything the site writes lives below one directory: database, media, thumbnails, indexes.
MEEPO_DATA_DIR = Path(env_str("MEEPO_DATA_DIR", str(BASE_DIR / "var"))).resolve()

# The fallback key is for development only; `check --deploy` flags it (README: production).
SECRET_KEY = env_str("MEEPO_SECRET_KEY", "django-insecure-meepo-development-key-do-not-use-in-production")

ALLOWED_HOSTS = env_list("MEEPO_ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("MEEPO_CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "tailwind",
    # Only for its static files: /api/docs serves Swagger UI from them, not from a CDN.
    "ninja",
    "catalog",
    "pipeline",
    "search",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "search.middleware.ApiNotStoredMiddleware",
    "search.middleware.ApiErrorsAsJsonMiddleware",
    "search.middleware.UploadLimitMiddleware",
    "search.middleware.RateLimitMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "meepo.urls"
WSGI_APPLICATION = "meepo.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "search.context_processors.model_banner",
                "search.context_processors.search_box",
            ],
        },
    },
]

_default_db = f"sqlite:///{MEEPO_DATA_DIR / 'meepo.sqlite3'}"
DATABASES = {"default": dj_database_url.parse(env_str("DATABASE_URL", _default_db), conn_max_age=60)}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets web workers read while embed_catalog writes; IMMEDIATE avoids lock-upgrade deadlocks.
    # Connections persist (conn_max_age above) as on PostgreSQL: a fresh SQLite connection starts
    # with an empty page cache, which cost a cached text search 1.5-2 ms (issue #4).
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=20000;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = MEEPO_DATA_DIR / "staticfiles"
MEDIA_URL = "/media/"
MEDIA_ROOT = MEEPO_DATA_DIR / "media"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# Catalogue images are served by Django unless a front server (deploy/nginx.conf) takes /media/.
MEEPO_SERVE_MEDIA = env_bool("MEEPO_SERVE_MEDIA", True)

CACHES = {
    # Query photo vectors are kept here between the upload and the result pages; a file cache
    # is shared by all gunicorn workers without another server.
    "default": {
        "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
        "LOCATION": MEEPO_DATA_DIR / "cache",
        "TIMEOUT": 3600,
        "OPTIONS": {"MAX_ENTRIES": 5000},
    },
    # Search counts per client for MEEPO_RATE_LIMIT, apart so that counters never push query
    # photos out of the default cache.
    "ratelimit": {
        "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
        "LOCATION": MEEPO_DATA_DIR / "ratelimit",
        "TIMEOUT": 3600,
        "OPTIONS": {"MAX_ENTRIES": 20000},
    },
}

SESSION_COOKIE_SECURE = env_bool("MEEPO_SECURE_COOKIES", False)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_SSL_REDIRECT = env_bool("MEEPO_SSL_REDIRECT", False)
SECURE_HSTS_SECONDS = env_int("MEEPO_HSTS_SECONDS", 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("MEEPO_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("MEEPO_HSTS_PRELOAD", False)
MEEPO_BEHIND_PROXY = env_bool("MEEPO_BEHIND_PROXY", False)
# Behind the proxy, the scheme and the client's address come from its X-Forwarded-* headers.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if MEEPO_BEHIND_PROXY else None

TAILWIND_APP_NAME = "search"
TAILWIND_CSS_PATH = "css/dist/styles.css"

# --- Model ---------------------------------------------------------------------------------
MEEPO_CLIP_MODEL = env_str("MEEPO_CLIP_MODEL", "ViT-B-32")
# "openai" and friends are open_clip tags; a path to a local checkpoint also works; "none"
# asks for random weights on purpose (the tiny model always has none).
MEEPO_CLIP_PRETRAINED = env_str("MEEPO_CLIP_PRETRAINED", "none" if MEEPO_CLIP_MODEL == "meepo-tiny" else "openai")
MEEPO_DEVICE = env_choice("MEEPO_DEVICE", "auto", {"auto", "cpu", "cuda"})
MEEPO_EMBED_BATCH_SIZE = env_int("MEEPO_EMBED_BATCH_SIZE", 0)  # 0: 32 on CPU, 256 on CUDA
MEEPO_TORCH_THREADS = env_int("MEEPO_TORCH_THREADS", 0)  # 0: torch's default (one per core)
# The image tower's arithmetic on a CPU (pipeline/encoder.py): auto is bf16 where the CPU has
# AMX or AVX512-BF16, int8 elsewhere; fp32 is the unoptimised reference.
MEEPO_CPU_IMAGE_PRECISION = env_choice("MEEPO_CPU_IMAGE_PRECISION", "auto", {"auto", "bf16", "int8", "fp32"})
# The text tower stays fp32 and exact unless asked: bf16 makes a text query 1.3-1.5 times faster on
# CPUs with AMX or AVX512-BF16, at a cosine of 0.9999 to the exact vector.
MEEPO_CPU_TEXT_PRECISION = env_choice("MEEPO_CPU_TEXT_PRECISION", "fp32", {"fp32", "bf16"})

# --- Index ---------------------------------------------------------------------------------
MEEPO_INDEX_DIR = MEEPO_DATA_DIR / "index"
# Below this many vectors search is exact; above it IVF over 8-bit codes (pipeline/index.py).
MEEPO_EXACT_INDEX_MAX = env_int("MEEPO_EXACT_INDEX_MAX", 20_000, minimum=1)
MEEPO_IVF_NPROBE = env_int("MEEPO_IVF_NPROBE", 0)  # 0: 64; text queries search half as many again
MEEPO_INDEX_KEEP = env_int("MEEPO_INDEX_KEEP", 3, minimum=2)

# --- Region search (windows) -----------------------------------------------------------------
# Which parts of each catalogue image get a vector of their own (pipeline/windows.py explains the
# format); MEEPO_WINDOWS=off turns region search off.
MEEPO_WINDOWS = env_str("MEEPO_WINDOWS", "relative:0.5,0.75:0.5")
MEEPO_WINDOWS_MAX = env_int("MEEPO_WINDOWS_MAX", 16)
# Below this many window vectors the windows index is an exact SQ8 scan; above, IVF with SQ8.
MEEPO_WINDOWS_EXACT_MAX = env_int("MEEPO_WINDOWS_EXACT_MAX", 200_000, minimum=1)
# How window hits of one catalogue image make its region score: weight of the best window, weight
# of the mean of its hit windows, and a bonus times the share of its windows that were hit.
try:
    MEEPO_REGION_WEIGHTS = tuple(float(part) for part in env_list("MEEPO_REGION_WEIGHTS", ["1", "0", "0"]))
except ValueError:
    MEEPO_REGION_WEIGHTS = ()
if len(MEEPO_REGION_WEIGHTS) != 3:
    raise ImproperlyConfigured("MEEPO_REGION_WEIGHTS must be three numbers: max weight, mean weight, share bonus.")

# --- Search --------------------------------------------------------------------------------
MEEPO_MAX_QUERY_LENGTH = env_int("MEEPO_MAX_QUERY_LENGTH", 300, minimum=1)
MEEPO_MAX_RESULTS = env_int("MEEPO_MAX_RESULTS", 1000, minimum=10)
MEEPO_PAGE_SIZE = env_int("MEEPO_PAGE_SIZE", 24, minimum=1)
MEEPO_MAX_UPLOAD_BYTES = env_int("MEEPO_MAX_UPLOAD_BYTES", 10 * 1024 * 1024, minimum=1024)
# Query photos stay in memory: a refused (or accepted) upload never leaves a temporary file.
FILE_UPLOAD_MAX_MEMORY_SIZE = MEEPO_MAX_UPLOAD_BYTES + 64 * 1024
# Searches per client address (IPv6: per /64) shared by all workers; "off" turns the limit off.
MEEPO_RATE_LIMIT = env_rate("MEEPO_RATE_LIMIT", "60/minute")
MEEPO_MAX_IMAGE_PIXELS = env_int("MEEPO_MAX_IMAGE_PIXELS", 40_000_000, minimum=1024)
MEEPO_THUMBNAIL_SIZE = env_int("MEEPO_THUMBNAIL_SIZE", 400, minimum=32)

# --- Fetching remote images ----------------------------------------------------------------
MEEPO_FETCH_TIMEOUT = env_float("MEEPO_FETCH_TIMEOUT", 10.0)
MEEPO_FETCH_MAX_BYTES = env_int("MEEPO_FETCH_MAX_BYTES", 15 * 1024 * 1024, minimum=1024)
MEEPO_FETCH_HOST_DELAY = env_float("MEEPO_FETCH_HOST_DELAY", 1.0)
MEEPO_FETCH_USER_AGENT = env_str(
    "MEEPO_FETCH_USER_AGENT", "MeepoBot/1.0 (self-hosted catalogue image search; +https://example.invalid/meepo)"
)
# Only for tests and closed networks: lets the fetcher reach loopback and private addresses.
MEEPO_FETCH_ALLOW_PRIVATE = env_bool("MEEPO_FETCH_ALLOW_PRIVATE", False)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("MEEPO_LOG_LEVEL", "WARNING")},
}
