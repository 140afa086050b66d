"""gunicorn settings for Meepo (`gunicorn -c deploy/gunicorn.conf.py meepo.wsgi`).

Each worker loads the CLIP model and opens the index itself as it starts, before it takes requests
(post_worker_init). The app is never preloaded: torch state created before fork hangs workers.
"""

import multiprocessing
import os

bind = os.environ.get("MEEPO_BIND", "127.0.0.1:8000")
# On a GPU host each worker would hold its own CUDA context and copy of the model on the GPU (about
# 1 GB each for ViT-B-32): two workers, more threads. Asked of the driver, not of torch: CUDA must
# not start before the fork.
gpu_host = os.path.isdir("/proc/driver/nvidia/gpus") and os.environ.get("MEEPO_DEVICE", "auto") != "cpu"
workers = int(os.environ.get("MEEPO_WEB_WORKERS", 2 if gpu_host else max(2, multiprocessing.cpu_count())))
# Threads share the worker's one model and index; a search holds the GIL little (torch and FAISS
# release it), so a few threads keep the CPU busy while others wait on the database or uploads.
worker_class = "gthread"
threads = int(os.environ.get("MEEPO_WEB_THREADS", 8 if gpu_host else 4))
preload_app = False
timeout = 120  # a starting worker loads the model
graceful_timeout = 30
max_requests = 5000
max_requests_jitter = 500
accesslog = os.environ.get("MEEPO_ACCESS_LOG", "-") or None
forwarded_allow_ips = os.environ.get("MEEPO_FORWARDED_ALLOW_IPS", "127.0.0.1")
# gunicorn's control socket (for gunicornc) is at $XDG_RUNTIME_DIR/gunicorn.ctl or
# ~/.gunicorn/gunicorn.ctl by default: one path for every gunicorn of a user, which each one unlinks
# as it starts and again as it stops, taking it from the others (the site, a second instance, the
# tests' and benchmarks' servers). systemd and signals manage Meepo's; no socket.
control_socket_disable = True
# The workers share the cores: one torch thread each on a 2-core box. Two threads per worker, each
# waking the other's sleeping OpenMP thread for every one of a query's ~200 small operations, were
# no faster for a lone text query and slower under load (`python -m pipeline.benchmarks.load`
# against both, alternated three times on the 2-core VPS: 1-client text p50 33-36 ms either way; 4
# clients 57-66 against 49-59 text searches/s, 15-16 against 14 photo searches/s). Spinning OpenMP
# threads answered a lone query in 29 ms but took the cores from the other worker under load (16
# text searches/s). Passive OpenMP threads stay for boxes with more cores than workers.
raw_env = [
    f"MEEPO_TORCH_THREADS={os.environ.get('MEEPO_TORCH_THREADS', max(1, multiprocessing.cpu_count() // workers))}",
    f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'PASSIVE')}",
]


def post_worker_init(worker):
    from search.searcher import warm_up

    warm_up()
