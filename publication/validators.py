"""Bounds on uploaded images (covers, logos, avatars: every ImageField).

Django's ImageField only checks that Pillow can read the file; Pillow merely warns
about a decompression bomb below 179 megapixels. A 100-megapixel PNG compresses to
under 100 KB and costs readers' browsers (and any thumbnailer) about 400 MB to draw,
so an upload is refused past `MAX_IMAGE_PIXELS` or `MAX_IMAGE_BYTES`, with a message
that says what to do. Only the header is read to learn the size: nothing is decoded.

The admin's image fields are `BoundedImageField`, which checks the bounds before
Django's own ImageField reads the file: Pillow refuses an image past 179 megapixels
outright, which Django reports only as "not a valid image or a corrupted image".
It then stores the picture re-encoded without its metadata (`without_metadata`): media
is public, and a photo's EXIF/XMP gives where it was taken (GPS) and with what camera.
"""

from __future__ import annotations

import io
from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from django.template.defaultfilters import filesizeformat
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_IMAGE_PIXELS = 25_000_000  # e.g. 6,000 x 4,000: more than any cover or logo needs
MAX_IMAGE_SIDE = 10_000
MAX_IMAGE_BYTES = 10 * 1024 * 1024
METADATA_KEYS = ("exif", "xmp", "XML:com.adobe.xmp", "comment", "photoshop", "adobe")


def validate_image_upload(value: Any) -> None:
    """Refuse an image upload that is too large in bytes or in pixels."""
    if not value or getattr(value, "_committed", True):
        return  # nothing new was uploaded; the stored file was checked when it was
    check_image_bounds(value)


def check_image_bounds(value: Any) -> None:
    """Refuse an uploaded file that is too large in bytes or in pixels, with the reason."""
    size = getattr(value, "size", None) or 0
    if size > MAX_IMAGE_BYTES:
        raise ValidationError(
            "The image is %(size)s; images may be at most %(limit)s. "
            "Save it smaller (e.g. as JPEG) and upload it again.",
            params={"size": filesizeformat(size), "limit": filesizeformat(MAX_IMAGE_BYTES)},
            code="image_too_big",
        )
    upload = getattr(value, "file", value)
    position = upload.tell() if hasattr(upload, "tell") else 0
    try:
        upload.seek(0)
        with Image.open(upload) as image:
            width, height = image.size
    except Image.DecompressionBombError as exc:
        raise ValidationError(
            "The image has more than %(bomb)d megapixels; images may have at most "
            "%(limit)d megapixels and %(side)s pixels a side. Resize it and upload it again.",
            params={
                "bomb": 2 * (Image.MAX_IMAGE_PIXELS or 0) // 1_000_000,
                "limit": MAX_IMAGE_PIXELS // 1_000_000,
                "side": f"{MAX_IMAGE_SIDE:,}",
            },
            code="image_too_many_pixels",
        ) from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        # A PNG cut off after its header still says how large it claims to be: a
        # decompression bomb is named as one, not as an unreadable file.
        upload.seek(0)
        claimed = _png_header_size(upload.read(33))
        if claimed is None:
            raise ValidationError(
                "The file is not an image we can read (PNG, JPEG, GIF or WebP), or it is "
                "damaged or incomplete.",
                code="image_unreadable",
            ) from exc
        width, height = claimed
        if width * height <= MAX_IMAGE_PIXELS and max(width, height) <= MAX_IMAGE_SIDE:
            raise ValidationError(
                "The image file is damaged or incomplete. Export it again and upload it again.",
                code="image_unreadable",
            ) from exc
    finally:
        upload.seek(position)
    if width * height > MAX_IMAGE_PIXELS or max(width, height) > MAX_IMAGE_SIDE:
        raise ValidationError(
            "The image is %(width)s by %(height)s pixels (%(mp).0f megapixels); images may "
            "have at most %(limit)d megapixels and %(side)s pixels a side. Resize it and "
            "upload it again.",
            params={
                "width": f"{width:,}",
                "height": f"{height:,}",
                "mp": width * height / 1_000_000,
                "limit": MAX_IMAGE_PIXELS // 1_000_000,
                "side": f"{MAX_IMAGE_SIDE:,}",
            },
            code="image_too_many_pixels",
        )


def _png_header_size(head: bytes) -> tuple[int, int] | None:
    """The width and height a PNG's IHDR chunk claims, or None if it is no PNG."""
    if len(head) < 24 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


class BoundedImageField(forms.ImageField):
    """The form field of an uploaded image: bounds first, then Django's own checks."""

    def to_python(self, data: Any) -> Any:
        if data is not None and hasattr(data, "read"):
            check_image_bounds(data)
        checked = super().to_python(data)
        if checked is None or not hasattr(checked, "read"):
            return checked
        return without_metadata(checked)


def without_metadata(upload: Any) -> Any:
    """The uploaded image re-encoded in its own format with only its pixels and colour
    profile: no EXIF (orientation is applied first), XMP or comments."""
    upload.seek(0)
    with Image.open(upload) as image:
        kind = image.format or "PNG"
        options: dict[str, Any] = {}
        if "icc_profile" in image.info:
            options["icc_profile"] = image.info["icc_profile"]
        if kind == "JPEG":
            options["quality"] = 90
        if getattr(image, "is_animated", False):
            picture: Image.Image = image
            options["save_all"] = True
            for key in ("duration", "loop", "transparency", "disposal"):
                if key in image.info:
                    options[key] = image.info[key]
        else:
            picture = ImageOps.exif_transpose(image)
            if "transparency" in image.info:
                options["transparency"] = image.info["transparency"]
        if kind == "MPO":
            kind = "JPEG"
        for key in METADATA_KEYS:  # Pillow writes some of these back unless they are gone
            picture.info.pop(key, None)
        buffer = io.BytesIO()
        picture.save(buffer, kind, **options)
    cleaned = SimpleUploadedFile(
        upload.name, buffer.getvalue(), content_type=getattr(upload, "content_type", None) or ""
    )
    cleaned.image = getattr(upload, "image", None)  # type: ignore[attr-defined]
    return cleaned
