"""Images in article bodies: the editor's upload endpoint and the list of uploads."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.core.files.storage import default_storage
from django.http import HttpRequest, JsonResponse
from django.urls import URLPattern, path
from django.utils.html import format_html
from django.views.decorators.http import require_POST

from newsletter.models import BodyImage
from newsletter.services.body_images import BodyImageError, store_body_image


@admin.register(BodyImage)
class BodyImageAdmin(admin.ModelAdmin):
    list_display = ["thumbnail", "key", "width", "height", "size_bytes", "uploaded_by"]
    list_display_links = ["key"]
    readonly_fields = [f.name for f in BodyImage._meta.fields] + ["thumbnail"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # images are added from the article editor

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="Image")
    def thumbnail(self, obj: BodyImage) -> str:
        smallest = min(obj.renditions, key=int)
        return format_html(
            '<img src="{}" alt="" width="96" style="height:auto">',
            default_storage.url(obj.renditions[smallest]),
        )

    def get_urls(self) -> list[URLPattern]:
        upload = path(
            "upload/",
            self.admin_site.admin_view(require_POST(self.upload_view)),
            name="newsletter_bodyimage_upload",
        )
        return [upload, *super().get_urls()]

    def upload_view(self, request: HttpRequest) -> JsonResponse:
        """The editor posts one file here (button, drop or paste) and inserts the answer."""
        if not request.user.has_perm("newsletter.change_article"):
            raise PermissionDenied
        upload = request.FILES.get("image")
        if upload is None:
            return JsonResponse({"error": "No image was sent."}, status=400)
        try:
            stored = store_body_image(upload=upload, uploaded_by=request.user)
        except BodyImageError as exc:
            return JsonResponse({"error": f"{upload.name}: {exc}"}, status=400)
        return JsonResponse({"src": stored.src, "width": stored.width, "height": stored.height})
