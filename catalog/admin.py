from django import forms
from django.contrib import admin, messages
from django.utils.html import format_html

from catalog.images import ImageRejected
from catalog.models import Item, ItemImage


class ItemImageForm(forms.ModelForm):
    upload = forms.FileField(required=False, help_text="A new photo for this image (replaces the stored file)")

    class Meta:
        model = ItemImage
        fields = ["position", "source_url"]
        # A long source URL at its natural width pushed the embedding columns off the page.
        widgets = {
            "source_url": forms.URLInput(attrs={"size": 24}),
            "position": forms.NumberInput(attrs={"style": "width:4em"}),
        }

    def clean_upload(self):
        upload = self.cleaned_data.get("upload")
        if upload:
            try:
                self.instance.attach(upload.read())
            except ImageRejected as error:
                raise forms.ValidationError(str(error)) from None
        elif not self.instance.pk and self.has_changed():
            raise forms.ValidationError("Upload a photo for the new image.")
        return upload


class ItemImageInline(admin.TabularInline):
    model = ItemImage
    form = ItemImageForm
    extra = 0
    fields = ["preview", "upload", "position", "source_url", "embedding_state", "embedding_error", "size"]
    readonly_fields = ["preview", "embedding_state", "embedding_error", "size"]

    @admin.display(description="image")
    def preview(self, image: ItemImage):
        if not image.sha256:
            return "—"
        return format_html('<img src="{}" style="height:64px;border-radius:4px" alt="">', image.thumbnail_url)

    @admin.display(description="size")
    def size(self, image: ItemImage):
        return f"{image.width}×{image.height}" if image.width else "—"


class EmbeddingStateFilter(admin.SimpleListFilter):
    title = "embedding state"
    parameter_name = "embedding"

    def lookups(self, request, model_admin):
        return ItemImage.State.choices

    def queryset(self, request, queryset):
        if self.value():
            return queryset.filter(images__embedding_state=self.value()).distinct()
        return queryset


@admin.register(Item)
class ItemAdmin(admin.ModelAdmin):
    list_display = ["thumbnail", "title", "category", "price_shown", "sku", "active", "embedding", "updated_at"]
    list_display_links = ["thumbnail", "title"]
    list_filter = ["category", "active", EmbeddingStateFilter]
    search_fields = ["title", "description", "sku", "tags"]
    inlines = [ItemImageInline]
    actions = ["hide", "unhide", "re_embed"]
    list_per_page = 50

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("images")

    @admin.display(description="")
    def thumbnail(self, item: Item):
        image = item.primary_image
        if image is None or not image.sha256:
            return "—"
        return format_html('<img src="{}" style="height:48px;border-radius:4px" alt="">', image.thumbnail_url)

    @admin.display(description="price", ordering="price")
    def price_shown(self, item: Item):
        return "—" if item.price is None else f"{item.price}\u00a0{item.currency}"

    @admin.display(description="embedding")
    def embedding(self, item: Item):
        """Its images' states at a glance ("1 embedded, 1 pending"), from the prefetched images."""
        states = [image.embedding_state for image in item.images.all()]
        return (
            ", ".join(f"{states.count(state)} {label}" for state, label in ItemImage.State.choices if state in states)
            or "—"
        )

    @admin.action(description="Hide selected items from search")
    def hide(self, request, queryset):
        count = queryset.update(active=False)
        Item.forget_categories()
        self.message_user(request, f"{count} item(s) hidden; they disappear from results at once.")

    @admin.action(description="Show selected items in search")
    def unhide(self, request, queryset):
        count = queryset.update(active=True)
        Item.forget_categories()
        self.message_user(request, f"{count} item(s) shown again.")

    @admin.action(description="Re-embed selected items on the next embed_catalog run")
    def re_embed(self, request, queryset):
        count = ItemImage.objects.filter(item__in=queryset).update(embedding_state=ItemImage.State.PENDING)
        self.message_user(
            request, f"{count} image(s) will be re-embedded by the next embed_catalog run.", messages.INFO
        )
