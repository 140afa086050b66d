import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from catalog.importing import CatalogueFileError, import_catalog


class Command(BaseCommand):
    help = "Import items from a folder of images or a CSV / JSONL file (re-running updates, never duplicates)."

    def add_arguments(self, parser):
        parser.add_argument("path", type=Path, help="a folder of images, or a .csv / .jsonl file")

    def handle(self, *args, path: Path, **options):
        def show_problem(message: str) -> None:
            self.stderr.write(f"skipped {message}")

        def progress(rows):
            return tqdm(rows, desc="importing", unit=" rows", disable=not sys.stderr.isatty(), leave=False)

        try:
            report = import_catalog(path=path, on_problem=show_problem, iter_wrapper=progress)
        except CatalogueFileError as error:
            raise CommandError(str(error)) from None
        self.stdout.write(f"Imported {path}: {report.summary()}")
