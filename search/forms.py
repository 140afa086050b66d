from django import forms
from django.conf import settings


class TextSearchForm(forms.Form):
    q = forms.CharField(max_length=settings.MEEPO_MAX_QUERY_LENGTH, required=False)
    category = forms.CharField(max_length=100, required=False)
    page = forms.IntegerField(min_value=1, max_value=1000, required=False)
    # A photo search already made: its vector waits in the cache under this token.
    photo = forms.RegexField(regex=r"^[A-Za-z0-9_-]{8,64}$", required=False)
    regions = forms.BooleanField(required=False, label="Also match parts of photos")


class PhotoSearchForm(forms.Form):
    MODES = [("both", "Whole photos and parts of them"), ("full", "Whole photos only"), ("region", "Parts only")]

    image = forms.FileField(required=False)
    url = forms.CharField(max_length=2000, required=False)
    # "Find items like this part" on an item page searches with a catalogue image.
    item_image = forms.IntegerField(required=False, min_value=1, widget=forms.HiddenInput)
    box = forms.CharField(required=False, max_length=80, widget=forms.HiddenInput)
    mode = forms.ChoiceField(choices=MODES, required=False)
    remove_text = forms.BooleanField(required=False, label="Remove text on the photo (memes, watermarks)")
    enhance = forms.BooleanField(required=False, label="Enhance a dull photo")

    def clean(self):
        cleaned = super().clean()
        url = (cleaned.get("url") or "").strip()
        if not cleaned.get("image") and not url and not cleaned.get("item_image"):
            raise forms.ValidationError("Choose a photo, drop one here, paste one, or give a photo's URL.")
        cleaned["mode"] = cleaned.get("mode") or "both"
        return cleaned
