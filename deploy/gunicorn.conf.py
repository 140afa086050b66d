"""gunicorn settings for Meepo (`gunicorn -c deploy/gunicorn.conf.py meepo.wsgi`).

Each worker loads the CLIP model and opens the index itself, lazily on its first search. The app is
never preloaded: torch state created before fork hangs workers.
"""

import multiprocessing
import os

bind = os.environ.get("MEEPO_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("MEEPO_WEB_WORKERS", max(2, multiprocessing.cpu_count())))
# Threads share the worker's one model and index; a search holds the GIL little (torch and FAISS
# release it), so a few threads keep the CPU busy while others wait on the database or uploads.
worker_class = "gthread"
threads = int(os.environ.get("MEEPO_WEB_THREADS", 4))
preload_app = False
timeout = 120  # the first search in a worker loads the model
graceful_timeout = 30
max_requests = 5000
max_requests_jitter = 500
accesslog = os.environ.get("MEEPO_ACCESS_LOG", "-") or None
forwarded_allow_ips = os.environ.get("MEEPO_FORWARDED_ALLOW_IPS", "127.0.0.1")
# Every worker may use every core for one search: a lone query then finishes sooner (measured by
# `manage.py benchmark --only http`: 1-client text p50 33-37 ms against 44-53 ms with the cores split
# between workers, with the same throughput under load). Passive OpenMP threads sleep instead of
# spinning when their worker is idle, so a busy worker gets the cores.
raw_env = [
    f"MEEPO_TORCH_THREADS={os.environ.get('MEEPO_TORCH_THREADS', multiprocessing.cpu_count())}",
    f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'PASSIVE')}",
]
