import ctypes
import logging
from pathlib import Path

from pipeline import encoder
from search.searcher import warm_up
from search.served_index import served_index


def test_a_worker_warms_up_the_model_even_before_there_is_an_index(db, data_dir, monkeypatch, caplog):
    monkeypatch.setattr(encoder, "_encoders", {})  # as in a new worker

    with caplog.at_level(logging.WARNING, logger="search.searcher"):
        warm_up()

    assert encoder.loaded_encoder() is not None
    assert "The search index is not loaded (The catalogue has not been indexed yet." in caplog.text


def test_a_worker_warms_up_the_model_and_the_index(indexed_catalogue, monkeypatch, caplog):
    monkeypatch.setattr(encoder, "_encoders", {})

    with caplog.at_level(logging.WARNING, logger="search.searcher"):
        warm_up()

    assert encoder.loaded_encoder() is not None
    assert served_index().size == 8
    assert "not loaded" not in caplog.text


def test_a_worker_gives_the_memory_that_loading_freed_back_to_the_system(db, data_dir):
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    size = 64 * 1024  # under glibc's mmap threshold: from the heap, as most of a model's freed tensors
    chunks = [libc.malloc(size) for _ in range(1600)]
    for chunk in chunks:
        ctypes.memset(chunk, 1, size)
    for chunk in chunks[:-1]:  # the last one keeps the freed 100 MB inside the heap, not at its top
        libc.free(ctypes.c_void_p(chunk))
    before = _anonymous_mb()

    warm_up()

    assert before - _anonymous_mb() > 80
    libc.free(ctypes.c_void_p(chunks[-1]))


def _anonymous_mb() -> int:
    return int(Path("/proc/self/status").read_text().split("RssAnon:")[1].split()[0]) // 1024
