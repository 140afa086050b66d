from django.core.checks import Tags, Warning, register

from pipeline import index as index_store
from pipeline.encoder import configured_model, weights_problem


@register(Tags.compatibility)
def check_served_index(app_configs, **kwargs):
    """Warn when search cannot work with the configured model (cheap: reads one small JSON file)."""
    spec = configured_model()
    problems = []
    problem = weights_problem(spec)
    if problem:
        problems.append(Warning(problem, hint="Fix MEEPO_CLIP_MODEL / MEEPO_CLIP_PRETRAINED.", id="meepo.W001"))
    version = index_store.current_version()
    if version is None:
        problems.append(
            Warning(
                "There is no search index yet, so searches will find nothing.",
                hint="Run: python manage.py embed_catalog",
                id="meepo.W002",
            )
        )
        return problems
    meta = index_store.read_meta(version)
    if meta.get("model_key") != spec.key:
        problems.append(
            Warning(
                f"The search index was built with {meta.get('model_key')} ({meta.get('dimension')}-d), "
                f"but Meepo is configured for {spec.key}.",
                hint="Run: python manage.py embed_catalog (it re-encodes the catalogue with the configured model).",
                id="meepo.W003",
            )
        )
    return problems
