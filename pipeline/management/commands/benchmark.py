import json
import os
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from pipeline.encoder import TINY_MODEL, Encoder, ModelUnavailable, configured_model, get_encoder

PARTS = ("encoding", "load", "index", "http")


class Command(BaseCommand):
    help = "Measure Meepo against naive baselines in one process on the same data (JSON + a short summary)."

    def add_arguments(self, parser):
        parser.add_argument("--quick", action="store_true", help="smaller data: a few minutes instead of many")
        parser.add_argument("--only", default=",".join(PARTS), help=f"comma-separated parts: {', '.join(PARTS)}")
        parser.add_argument("--output", type=Path, default=None, help="where to write the JSON report")

    def handle(self, *args, quick: bool, only: str, output: Path | None, **options):
        from pipeline.benchmarks import encoding, indexing, loading, machine, serving

        parts = {part.strip() for part in only.split(",") if part.strip()}
        if parts - set(PARTS):
            raise CommandError(f"--only takes {', '.join(PARTS)}")
        report = {"model": configured_model().key, "quick": quick}
        try:
            meepo = get_encoder()
        except ModelUnavailable as error:
            raise CommandError(str(error)) from None
        report["machine"] = machine.describe()
        report["image_precision"] = meepo.image_precision
        if "encoding" in parts:
            naive = Encoder(meepo.spec, optimised=False)
            report["embedding"] = encoding.embedding_compare(
                naive, meepo, count=62 if quick else 248, batch_size=meepo.batch_size
            )
            self._say("embedding", report["embedding"])
            opt_in = meepo.text_precision == "fp32" and not meepo.on_gpu
            report["text_encoder"] = encoding.text_encoder(
                naive,
                meepo,
                repeats=3 if quick else 10,
                bf16_encoder=Encoder(meepo.spec, text_precision="bf16") if opt_in else None,
            )
            self._say("text encoder", report["text_encoder"])
            report["image_query"] = encoding.image_query_compare(naive, meepo, repeats=2 if quick else 6)
            self._say("image query", report["image_query"])
            report["box_query"] = encoding.box_query_compare(naive, meepo, repeats=2 if quick else 6)
            self._say("box query", report["box_query"])
        if "load" in parts:
            if meepo.spec.name == TINY_MODEL:
                report["load"] = {"skipped": f"{TINY_MODEL} has no weights file to load"}
            else:
                report["load"] = loading.model_load(meepo.spec.name, dict(os.environ))
            self._say("load", report["load"])
        if "index" in parts:
            report["index"] = []
            for count in (100_000,) if quick else (100_000, 1_000_000):
                row = indexing.scale(count, dimension=512, queries=100 if quick else 200)
                report["index"].append(row)
                self._say(f"index {count:,}", row)
        if "http" in parts:
            report["http"] = serving.http(
                items=20_000 if quick else 100_000,
                seconds=5 if quick else 20,
                concurrency=4,
                mixed_seconds=10 if quick else 60,
            )
            self._say("http", report["http"])
        output = output or Path(settings.MEEPO_DATA_DIR) / "benchmark.json"
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(report, indent=2))
        self.stdout.write(f"full report: {output}")

    def _say(self, label: str, result: dict) -> None:
        self.stdout.write(f"{label}: {json.dumps(result)}")
