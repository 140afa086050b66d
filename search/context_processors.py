from django.conf import settings

from pipeline.encoder import configured_model


def model_banner(request):
    spec = configured_model()
    return {"meepo_model": spec}


def search_box(request):
    """The header's search box is on every page, whatever form the view made."""
    return {"max_query_length": settings.MEEPO_MAX_QUERY_LENGTH}
