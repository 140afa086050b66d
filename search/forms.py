import math
import unicodedata

from django import forms
from django.conf import settings


def _invisible(character: str) -> bool:
    # Format characters (Unicode category Cf) such as the zero-width space or a byte-order mark
    # show nothing: a query of only these is no query.
    return character.isspace() or unicodedata.category(character) == "Cf"


def strip_invisible(text: str) -> str:
    start, end = 0, len(text)
    while start < end and _invisible(text[start]):
        start += 1
    while end > start and _invisible(text[end - 1]):
        end -= 1
    return text[start:end]


class TextSearchForm(forms.Form):
    q = forms.CharField(
        max_length=settings.MEEPO_MAX_QUERY_LENGTH,
        required=False,
        error_messages={
            "max_length": "Shorten the search to at most %(limit_value)d characters (it has %(show_value)d).",
        },
    )
    category = forms.CharField(max_length=100, required=False)
    # Not an IntegerField: a page number from an old or edited link is never worth an error page.
    page = forms.CharField(required=False)
    # A photo search already made: its vector waits in the cache under this token.
    photo = forms.RegexField(
        regex=r"^[A-Za-z0-9_-]{8,64}$",
        required=False,
        error_messages={"invalid": "This photo search address is not complete. Search with the photo again."},
    )
    regions = forms.BooleanField(required=False, label="Also match parts of photos")

    def clean_q(self) -> str:
        return strip_invisible(self.cleaned_data["q"])

    def clean_page(self) -> int:
        """Anything that is not a page number (abc, 0, -1) is the first page. Past the last page a
        search can have, one page past it: the results page then links to the last page there is."""
        try:
            page = int(self.cleaned_data["page"])
        except ValueError:
            return 1
        most = math.ceil(settings.MEEPO_MAX_RESULTS / settings.MEEPO_PAGE_SIZE)
        return min(max(page, 1), most + 1)


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

    @property
    def max_upload_bytes(self) -> int:
        """For the photo card, which says the limit and checks a chosen photo against it."""
        return settings.MEEPO_MAX_UPLOAD_BYTES

    def clean(self):
        cleaned = super().clean()
        url = (cleaned.get("url") or "").strip()
        if not cleaned.get("image") and not url and not cleaned.get("item_image"):
            raise forms.ValidationError("Choose a photo, drop one here, paste one, or give a photo's URL.")
        cleaned["mode"] = cleaned.get("mode") or "both"
        return cleaned
