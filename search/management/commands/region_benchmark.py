import json

from django.core.management.base import BaseCommand, CommandError

from search import region_benchmark
from search.served_index import IndexNotReady


def weights(text: str) -> tuple[float, float, float]:
    parts = tuple(float(part) for part in text.split(","))
    if len(parts) != 3:
        raise ValueError("weights are three numbers: max,mean,share-bonus")
    return parts


class Command(BaseCommand):
    help = "Measure region search on queries made from the catalogue: hit@1, hit@5 and latency per mode."

    def add_arguments(self, parser):
        parser.add_argument("--queries", type=int, default=60, help="queries of each kind (default 60)")
        parser.add_argument("--quick", action="store_true", help="20 queries of each kind")
        parser.add_argument(
            "--weights",
            type=weights,
            nargs="+",
            default=None,
            help="region weight sets to compare, e.g. 0.7,0.3,0.05 1,0,0 (default: the configured ones)",
        )
        parser.add_argument("--json", action="store_true", help="print the full report as JSON")

    def handle(self, *args, queries: int, quick: bool, weights, **options):
        from django.conf import settings

        try:
            report = region_benchmark.run(
                per_kind=20 if quick else queries, weight_sets=weights or [settings.MEEPO_REGION_WEIGHTS]
            )
        except (IndexNotReady, ValueError) as error:
            raise CommandError(str(error)) from None
        if options["json"]:
            self.stdout.write(json.dumps(report, indent=2))
            return
        self.stdout.write(f"queries: {report['queries']}")
        self.stdout.write(
            f"{'weights':<16} {'mode':<7} {'aligned @1/@5':>14} {'crop @1/@5':>12} "
            f"{'composite @1/@5':>16} {'ms/query':>9}"
        )
        for row in report["results"]:
            cells = []
            for kind in region_benchmark.KINDS:
                hits = row.get(kind)
                cells.append(f"{hits['hit@1']:.2f}/{hits['hit@5']:.2f}" if hits else "-")
            label = ",".join(f"{w:g}" for w in row["weights"])
            self.stdout.write(
                f"{label:<16} {row['mode']:<7} {cells[0]:>14} {cells[1]:>12} {cells[2]:>16} {row['mean_ms']:>9.1f}"
            )
