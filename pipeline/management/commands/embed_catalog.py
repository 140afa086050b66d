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

    def handle(self, *args, full: bool, **options):
        def progress(batches, total):
            bar = tqdm(total=total, desc="embedding", unit=" images", disable=not sys.stderr.isatty())
            for batch in batches:
                yield batch
                bar.update(len(batch[0]))
            bar.close()

        try:
            report = embed_catalog(full=full, iter_wrapper=progress)
        except (AlreadyRunning, ModelUnavailable) as error:
            raise CommandError(str(error)) from None
        self.stdout.write(f"embed_catalog: {report.summary()}")
