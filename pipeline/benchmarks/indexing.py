"""Index benchmark: Meepo's index for a catalogue size against fp32 brute force, on synthetic
CLIP-like vectors (pipeline/synthetic.py), for image-like and text-like queries."""

import os
import time

import numpy as np

from pipeline import index as index_store
from pipeline.synthetic import catalogue_vectors, image_queries, text_queries
from search.served_index import ServedIndex

K = 10


def _bytes_per_vector(index, count: int) -> float:
    import faiss

    # + 8: the int64 row -> image id map stored beside every index.
    return round(len(faiss.serialize_index(index)) / count + 8, 1)


def _latencies(search, queries: np.ndarray) -> list[float]:
    samples = []
    for query in queries:
        started = time.perf_counter()
        search(query)
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def _recall(found: list[np.ndarray], truth: np.ndarray) -> float:
    return round(
        float(np.mean([len(set(f.tolist()) & set(t.tolist())) / K for f, t in zip(found, truth, strict=True)])), 4
    )


def scale(count: int, *, dimension: int = 512, queries: int = 200) -> dict:
    import faiss

    vectors = catalogue_vectors(count, dimension, seed=0)
    kinds = {"image": image_queries(vectors, queries), "text": text_queries(vectors, queries)}
    exact = faiss.IndexFlatIP(dimension)
    exact.add(vectors)
    faiss.omp_set_num_threads(os.cpu_count() or 1)  # ground truth in batch, all cores
    truth = {kind: exact.search(batch, K)[1] for kind, batch in kinds.items()}

    index_type = index_store.choose_index_type(count)
    started = time.perf_counter()
    index = index_store.make_index(vectors, index_type)
    build_seconds = time.perf_counter() - started
    meta = {
        "index_type": index_type,
        "nprobe": index_store.default_nprobe(index_type),
        "text_nprobe": index_store.default_nprobe(index_type, text=True),
    }
    served = ServedIndex(version=None, meta=meta, index=index, ids=np.arange(count), windows=None)

    faiss.omp_set_num_threads(1)  # as in a web worker: one query at a time, one thread
    report = {"vectors": count, "dimension": dimension, **meta}
    report["build_s"] = round(build_seconds, 1)
    report["meepo_bytes_per_vector"] = _bytes_per_vector(index, count)
    report["naive_bytes_per_vector"] = dimension * 4 + 8
    for kind, batch in kinds.items():
        naive_ms = _latencies(lambda q: exact.search(q.reshape(1, -1), K), batch)
        text = kind == "text"
        meepo_ms = _latencies(lambda q, text=text: served.nearest(q, K, text=text), batch)
        found = [served.nearest(q, K, text=text)[0] for q in batch]
        report[f"{kind}_queries"] = {
            "naive_p50_ms": round(float(np.percentile(naive_ms, 50)), 3),
            "naive_p95_ms": round(float(np.percentile(naive_ms, 95)), 3),
            "meepo_p50_ms": round(float(np.percentile(meepo_ms, 50)), 3),
            "meepo_p95_ms": round(float(np.percentile(meepo_ms, 95)), 3),
            "speedup_p50": round(float(np.percentile(naive_ms, 50) / np.percentile(meepo_ms, 50)), 1),
            "recall_at_10": _recall(found, truth[kind]),
        }
    return report
