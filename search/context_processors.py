from pipeline.encoder import configured_model


def model_banner(request):
    spec = configured_model()
    return {"meepo_model": spec}
