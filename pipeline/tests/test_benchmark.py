"""The speed-ups keep results equivalent (on the tiny model; `manage.py benchmark` checks ViT-B-32)."""

import json
import os

import pytest
from django.core.management import call_command

from pipeline.benchmarks import encoding
from pipeline.encoder import Encoder, get_encoder


def test_fast_text_encoding_gives_the_naive_result():
    meepo = get_encoder()
    naive = Encoder(meepo.spec, optimised=False)
    bf16 = Encoder(meepo.spec, text_precision="bf16")

    result = encoding.text_encoder(naive, meepo, repeats=1, bf16_encoder=bf16)

    assert result["precision"] == "fp32" and result["max_abs_difference"] < 1e-5
    assert result["bf16_opt_in"]["cosine_to_naive_min"] >= 0.999


def test_fast_image_encoding_stays_close_to_the_naive_fp32_result():
    meepo = get_encoder()
    naive = Encoder(meepo.spec, optimised=False)

    embedded = encoding.embedding_compare(naive, meepo, count=24, batch_size=8)
    query = encoding.image_query_compare(naive, meepo, repeats=1)
    box_query = encoding.box_query_compare(naive, meepo, repeats=1)

    # The tiny model's random features react more to decoding details than a trained model's;
    # ViT-B-32 must reach min 0.99 / mean 0.995 (README, Performance).
    assert embedded["cosine_to_naive_mean"] >= 0.995
    assert embedded["cosine_to_naive_min"] >= 0.97
    assert query["cosine_to_naive_min"] >= 0.97
    assert box_query["cosine_to_naive_min"] >= 0.97
    assert embedded["device"] == meepo.device and embedded["forward_images_per_s"] > 0


def test_the_benchmark_command_writes_a_json_report(tmp_path, capsys):
    output = tmp_path / "report.json"

    call_command("benchmark", "--quick", "--only", "encoding", "--output", str(output))

    report = json.loads(output.read_text())
    assert report["model"] == "meepo-tiny:untrained"
    assert report["machine"]["cores"] >= 1 and "torch_threads" in report["machine"]
    assert report["image_precision"] in {"bf16", "int8", "fp32", "fp16"}
    assert {"embedding", "text_encoder", "image_query", "box_query"} <= set(report)
    assert "embedding:" in capsys.readouterr().out


def test_the_index_benchmark_measures_meepos_real_search_path(settings):
    from pipeline.benchmarks import indexing

    settings.MEEPO_EXACT_INDEX_MAX = 1000

    row = indexing.scale(20_000, dimension=64, queries=50)

    assert row["index_type"] == "ivf1024,sq8" and (row["nprobe"], row["text_nprobe"]) == (64, 96)
    assert row["meepo_bytes_per_vector"] < row["naive_bytes_per_vector"] / 2
    assert row["image_queries"]["recall_at_10"] >= 0.95
    assert row["text_queries"]["recall_at_10"] >= 0.9


@pytest.mark.slow
def test_a_worker_maps_the_weights_file_instead_of_reading_it_into_its_own_memory(tmp_path):
    from pipeline.benchmarks import loading

    env = {key: value for key, value in os.environ.items() if key != "DATABASE_URL"}
    env["MEEPO_DATA_DIR"] = str(tmp_path)

    result = loading.model_load("ViT-S-32", env)

    # Read into memory, the checkpoint (242 MB) sits beside the model it is copied into.
    assert result["naive"]["load_anonymous_mb"] - result["meepo"]["load_anonymous_mb"] > result["checkpoint_mb"] / 2
    assert result["meepo"]["seconds"] > 0
