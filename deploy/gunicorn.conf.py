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
# Torch would start one thread per core in every worker; split the cores between workers instead.
raw_env = [
    f"MEEPO_TORCH_THREADS={os.environ.get('MEEPO_TORCH_THREADS', max(1, multiprocessing.cpu_count() // workers))}"
]
