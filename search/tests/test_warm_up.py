import logging

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
