from django import forms
from django.conf import settings


class TextSearchForm(forms.Form):
    q = forms.CharField(max_length=settings.MEEPO_MAX_QUERY_LENGTH, required=False)
    category = forms.CharField(max_length=100, required=False)
    page = forms.IntegerField(min_value=1, max_value=1000, required=False)
    # A photo search already made: its vector waits in the cache under this token.
    photo = forms.RegexField(regex=r"^[A-Za-z0-9_-]{8,64}$", required=False)


class PhotoSearchForm(forms.Form):
    image = forms.FileField(required=False)
    url = forms.CharField(max_length=2000, required=False)

    def clean(self):
        cleaned = super().clean()
        if not cleaned.get("image") and not (cleaned.get("url") or "").strip():
            raise forms.ValidationError("Choose a photo, drop one here, paste one, or give a photo's URL.")
        return cleaned
