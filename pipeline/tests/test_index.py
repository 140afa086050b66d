import numpy as np
import pytest
from django.core import checks

from catalog.models import Item
from meepo.testing import demo_rows, write_catalogue
from pipeline import index as index_store
from pipeline import synthetic
from pipeline.embedding import embed_catalog
from pipeline.encoder import ModelSpec
from search import searcher, served_index


def clustered_vectors(count: int, dimension: int, *, seed: int) -> np.ndarray:
    """Unit vectors in tight clusters, the way real image embeddings bunch up (uniform noise
    would make approximate search look better than it is)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(8, count // 100), dimension))
    vectors = centres[rng.integers(0, len(centres), count)] + 0.35 * rng.normal(size=(count, dimension))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors.astype(np.float32)


@pytest.mark.parametrize("kind", ["image", "text"])
def test_the_approximate_index_finds_what_exact_search_finds(settings, data_dir, kind):
    settings.MEEPO_EXACT_INDEX_MAX = 1000
    vectors = synthetic.catalogue_vectors(30_000, 128, seed=1)
    make_queries = synthetic.text_queries if kind == "text" else synthetic.image_queries
    queries = make_queries(vectors, 200)
    exact = index_store.make_index(vectors, "flat")
    spec = ModelSpec("meepo-tiny", None)

    version = index_store.build_index(vectors=vectors, ids=np.arange(len(vectors)), spec=spec, dimension=128)
    served = served_index._open(version)

    assert served.meta["index_type"] == "ivf1024,sq8"
    assert (served.meta["nprobe"], served.meta["text_nprobe"]) == (64, 96)
    _, truth = exact.search(queries, 10)
    found = [set(served.nearest(query, 10, text=kind == "text")[0]) for query in queries]
    recall = np.mean([len(found[i] & set(truth[i])) / 10 for i in range(len(queries))])
    assert recall >= 0.95


def test_each_build_goes_to_a_new_version_and_old_ones_are_pruned(settings, data_dir):
    settings.MEEPO_INDEX_KEEP = 2
    spec = ModelSpec("meepo-tiny", None)
    vectors = clustered_vectors(50, 64, seed=3)
    versions = [index_store.build_index(vectors=vectors, ids=np.arange(50), spec=spec, dimension=64) for _ in range(4)]

    assert index_store.current_version() == versions[-1]
    assert sorted(path.name for path in index_store.index_dir().glob("v*")) == [v.name for v in versions[-2:]]
    meta = index_store.read_meta(versions[-1])
    assert set(meta) >= {"model", "pretrained", "dimension", "vectors", "index_type", "built_at", "id_map"}


def test_a_killed_build_leaves_the_index_in_service_untouched(settings, data_dir):
    spec = ModelSpec("meepo-tiny", None)
    served = index_store.build_index(
        vectors=clustered_vectors(10, 64, seed=4), ids=np.arange(10), spec=spec, dimension=64
    )
    # What a build killed half-way leaves behind: a partial folder that is not in service.
    leftover = index_store.index_dir() / ".building-v-killed"
    leftover.mkdir()
    (leftover / index_store.INDEX_FILE).write_bytes(b"half an index")

    assert index_store.current_version() == served
    index_store.build_index(vectors=clustered_vectors(10, 64, seed=5), ids=np.arange(10), spec=spec, dimension=64)
    assert not leftover.exists()


def test_a_worker_picks_up_a_newly_switched_index_without_a_restart(indexed_catalogue, tmp_path):
    first = searcher.served_index()
    assert first.size == 8
    from catalog.importing import import_catalog

    import_catalog(path=write_catalogue(tmp_path / "more", demo_rows(12)[8:]))
    embed_catalog()

    second = searcher.served_index()
    assert second.version != first.version and second.size == 12


def test_the_check_warns_when_there_is_no_index(data_dir):
    messages = [message.id for message in checks.run_checks()]

    assert "meepo.W002" in messages


def test_the_check_warns_when_the_index_was_built_with_another_model(data_dir):
    spec = ModelSpec("ViT-B-32", "openai")
    index_store.build_index(vectors=clustered_vectors(5, 512, seed=6), ids=np.arange(5), spec=spec, dimension=512)

    warnings = [message for message in checks.run_checks() if message.id == "meepo.W003"]

    assert len(warnings) == 1
    assert "ViT-B-32:openai" in warnings[0].msg and "embed_catalog" in warnings[0].hint
    with pytest.raises(searcher.IndexNotReady, match="built with ViT-B-32:openai"):
        searcher.served_index()


def test_the_check_is_quiet_when_the_index_matches(indexed_catalogue):
    assert not [message for message in checks.run_checks() if message.id.startswith("meepo.")]


def test_hidden_items_stay_in_the_index_but_never_in_results(indexed_catalogue):
    hidden = Item.objects.order_by("id").first()
    vector = searcher.item_vector(hidden)
    Item.objects.filter(id=hidden.id).update(active=False)

    found = searcher.search_by_vector(vector=vector, limit=20)

    assert hidden.id not in [hit.item.id for hit in found.hits]
    assert found.total == 7


def test_text_queries_probe_more_lists_and_older_versions_fall_back_to_one_nprobe():
    assert served_index._nprobe({"nprobe": 64, "text_nprobe": 96}, text=True) == 96
    assert served_index._nprobe({"nprobe": 64, "text_nprobe": 96}, text=False) == 64
    assert served_index._nprobe({"nprobe": 64}, text=True) == 64
    assert served_index._nprobe({"nprobe": None}, text=True) is None
