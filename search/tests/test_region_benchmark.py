import json

from django.core.management import call_command


def test_the_region_benchmark_reports_every_mode_and_kind(indexed_catalogue, capsys):
    call_command("region_benchmark", "--queries", "8", "--weights", "0.7,0.3,0.05", "1,0,0", "--json")

    report = json.loads(capsys.readouterr().out)
    assert report["queries"] == {"aligned": 8, "crop": 8, "composite": 8}
    rows = {(tuple(row["weights"]), row["mode"]): row for row in report["results"]}
    assert set(rows) == {(w, m) for w in ((0.7, 0.3, 0.05), (1.0, 0.0, 0.0)) for m in ("full", "region", "both")}
    for row in rows.values():
        assert row["mean_ms"] > 0
        for kind in ("aligned", "crop", "composite"):
            assert 0 <= row[kind]["hit@1"] <= row[kind]["hit@5"] <= 1
    # Exact windows are in the windows index, so region search finds them; whole-image search may not.
    assert rows[((1.0, 0.0, 0.0), "region")]["aligned"]["hit@1"] == 1.0
    assert rows[((0.7, 0.3, 0.05), "region")]["aligned"]["hit@5"] == 1.0
    assert (
        rows[((0.7, 0.3, 0.05), "region")]["aligned"]["hit@1"] >= rows[((0.7, 0.3, 0.05), "full")]["aligned"]["hit@1"]
    )


def test_with_the_default_weights_every_crop_aligned_to_a_window_comes_first(indexed_catalogue, capsys):
    call_command("region_benchmark", "--queries", "16", "--json")

    results = json.loads(capsys.readouterr().out)["results"]
    assert {tuple(row["weights"]) for row in results} == {(1.0, 0.0, 0.0)}
    rows = {row["mode"]: row for row in results}
    assert rows["region"]["aligned"]["hit@1"] == 1.0 and rows["both"]["aligned"]["hit@1"] == 1.0


def test_the_table_has_a_row_per_mode(indexed_catalogue, capsys):
    call_command("region_benchmark", "--queries", "4")

    out = capsys.readouterr().out
    assert "aligned @1/@5" in out
    assert sum(line.startswith("1,0,0") for line in out.splitlines()) == 3
