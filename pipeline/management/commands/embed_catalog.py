import sys

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from pipeline.embedding import embed_catalog
from pipeline.encoder import ModelUnavailable
from pipeline.locking import AlreadyRunning


class Command(BaseCommand):
    help = "Encode new or changed catalogue images and switch in a fresh search index (safe to run from cron)."

    def add_arguments(self, parser):
        parser.add_argument("--full", action="store_true", help="re-encode every image, not only new or changed ones")
        parser.add_argument("--no-windows", action="store_true", help="skip the windows used by region search")

    def say_now(self, line: str) -> None:
        self.stdout.write(f"embed_catalog: {line}")
        self.stdout.flush()  # not at the end of the run: piped, stdout is buffered (README, Upgrades)

    def handle(self, *args, full: bool, no_windows: bool, **options):
        def progress(label):
            def wrap(batches, total):
                bar = tqdm(total=total, desc=label, unit=" images", disable=not sys.stderr.isatty())
                for batch in batches:
                    yield batch
                    bar.update(len(batch[0]))
                bar.close()

            return wrap

        try:
            report = embed_catalog(
                full=full,
                windows=not no_windows,
                iter_wrapper=progress("images"),
                windows_iter_wrapper=progress("windows"),
                say=self.say_now,
            )
        except (AlreadyRunning, ModelUnavailable) as error:
            raise CommandError(str(error)) from None
        self.say_now(report.summary())
