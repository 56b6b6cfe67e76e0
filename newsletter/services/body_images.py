"""Pictures in article bodies: upload once, resize once, serve the right size.

Called by the admin's upload endpoint (the editor's image button, drag-and-drop and
paste all post there) and by the body rendering of the site and of email.

- **Storage.** Every file goes through Django's storage API (`default_storage`): the
  local disk under MEDIA_ROOT by default, or any S3-compatible bucket by configuring
  django-storages in `STORAGES["default"]`; nothing here knows which.
- **Bounds.** The upload is refused, with the reason, past `MAX_IMAGE_BYTES` or
  `MAX_IMAGE_PIXELS` / `MAX_IMAGE_SIDE` (publication/validators.py: read from the header
  before anything is decoded), or when it is not a PNG, JPEG, GIF or WebP, or when it
  cannot be decoded whole (a truncated file claiming a large size decodes nothing).
- **Renditions** are made once, at upload, with Pillow: `SITE_WIDTHS` wide for the site
  (never wider than the original) and `EMAIL_WIDTH` wide for email. The body keeps the
  display rendition's URL; the site adds `width`, `height` and `srcset`, email swaps
  in the email rendition.
- **No metadata.** The uploaded bytes are never stored: media is public, and a photo's
  EXIF/XMP carries where it was taken (GPS) and with what camera. The kept original is
  the decoded picture re-encoded at full size (orientation applied, colour profile
  kept), like every rendition.
"""

from __future__ import annotations

import io
import re
import secrets
from dataclasses import dataclass
from html import escape
from typing import Any

from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from PIL import Image, ImageOps

from newsletter.models import BodyImage
from newsletter.services.content import MarkupRewriter
from newsletter.services.footnotes import render_footnotes
from publication.validators import check_image_bounds

SITE_WIDTHS = (480, 960, 1440, 2000)
DISPLAY_WIDTH = 960  # the rendition the body's <img src> names
EMAIL_WIDTH = 600  # the email's content column
SIZES = "(max-width: 720px) 100vw, 720px"
FORMATS = {"PNG", "JPEG", "GIF", "WEBP", "MPO"}
JPEG_QUALITY = 82
_KEY_RE = re.compile(r"body-images/(?P<key>[0-9a-f]{32})/")


class BodyImageError(Exception):
    """The upload cannot be used; the message says why and what to do."""


@dataclass(frozen=True)
class StoredImage:
    image: BodyImage
    src: str
    width: int
    height: int


def store_body_image(*, upload: Any, uploaded_by: Any = None) -> StoredImage:
    """Check an uploaded file, store it and its renditions; return what the body shows."""
    try:
        check_image_bounds(upload)
    except ValidationError as exc:
        raise BodyImageError(" ".join(exc.messages)) from exc
    upload.seek(0)
    data = upload.read()
    try:
        with Image.open(io.BytesIO(data)) as probe:
            kind = probe.format or ""
            if kind not in FORMATS:
                raise BodyImageError(
                    f"{kind or 'This file'} is not a format we take: upload a PNG, JPEG, "
                    "GIF or WebP."
                )
            probe.load()  # decode it all: a truncated or damaged file fails here
            picture = ImageOps.exif_transpose(probe)
            picture.load()
    except BodyImageError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise BodyImageError(
            "The image file is damaged or incomplete, so it cannot be shown. Export it "
            "again from your photo editor and upload it again."
        ) from exc
    has_alpha = picture.mode in ("RGBA", "LA", "PA") or (
        picture.mode == "P" and "transparency" in picture.info
    )
    icc_profile = probe.info.get("icc_profile") if probe.mode in ("RGB", "RGBA") else None
    picture = picture.convert("RGBA" if has_alpha else "RGB")
    picture.info.clear()  # EXIF, XMP, comments: Pillow would write some of them back
    if icc_profile:
        picture.info["icc_profile"] = icc_profile
    key = secrets.token_hex(16)
    folder = f"body-images/{key}"
    width, height = picture.size
    original = _save_rendition(picture, folder, width, has_alpha, "original")
    renditions: dict[str, str] = {}
    for target in sorted({min(w, width) for w in (*SITE_WIDTHS, DISPLAY_WIDTH)}):
        renditions[str(target)] = _save_rendition(picture, folder, target, has_alpha)
    email_name = _save_rendition(picture, folder, min(EMAIL_WIDTH, width), has_alpha, "email")
    image = BodyImage.objects.create(
        key=key,
        original=original,
        width=width,
        height=height,
        renditions=renditions,
        email_rendition=email_name,
        size_bytes=len(data),
        uploaded_by=uploaded_by if getattr(uploaded_by, "pk", None) else None,
    )
    display = min(DISPLAY_WIDTH, width)
    return StoredImage(
        image=image,
        src=default_storage.url(renditions[str(display)]),
        width=display,
        height=_scaled_height(image, display),
    )


def _scaled_height(image: BodyImage, width: int) -> int:
    return max(1, round(image.height * width / image.width))


def _save_rendition(
    picture: Image.Image, folder: str, width: int, has_alpha: bool, label: str = ""
) -> str:
    height = max(1, round(picture.height * width / picture.width))
    resized = picture
    if width != picture.width:
        resized = picture.resize((width, height), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    # Only the pixels and the colour profile are written: no EXIF, XMP or comments.
    profile = {"icc_profile": picture.info["icc_profile"]} if "icc_profile" in picture.info else {}
    if has_alpha:
        resized.save(buffer, "PNG", optimize=True, **profile)
        extension = "png"
    else:
        resized.save(
            buffer, "JPEG", quality=JPEG_QUALITY, progressive=True, optimize=True, **profile
        )
        extension = "jpg"
    stem = "original" if label == "original" else f"{label or 'w'}{width}"
    name = f"{folder}/{stem}.{extension}"
    return default_storage.save(name, ContentFile(buffer.getvalue()))


def _image_key(src: str) -> str | None:
    match = _KEY_RE.search(src)
    return match["key"] if match else None


class _ImageRewriter(MarkupRewriter):
    def __init__(self, images: dict[str, BodyImage], *, for_email: bool) -> None:
        super().__init__()
        self.images = images
        self.for_email = for_email

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        image = self._image(tag, attrs)
        if image is None:
            super().handle_starttag(tag, attrs)
            return
        kept = [(name, value or "") for name, value in attrs if name in ("alt", "title")]
        if not any(name == "alt" for name, _ in kept):
            kept.append(("alt", ""))
        if self.for_email:
            width = min(EMAIL_WIDTH, image.width)
            src = default_storage.url(image.email_rendition)
            extra = [("src", src), ("width", str(width))]
            extra.append(("height", str(_scaled_height(image, width))))
        else:
            widths = sorted(int(w) for w in image.renditions)
            display = max(w for w in widths if w <= max(DISPLAY_WIDTH, widths[0]))
            srcset = ", ".join(
                f"{default_storage.url(image.renditions[str(w)])} {w}w" for w in widths
            )
            extra = [
                ("src", default_storage.url(image.renditions[str(display)])),
                ("srcset", srcset),
                ("sizes", SIZES),
                ("width", str(display)),
                ("height", str(_scaled_height(image, display))),
                ("loading", "lazy"),
                ("decoding", "async"),
            ]
        attributes = "".join(f' {name}="{escape(value)}"' for name, value in extra + kept)
        self._emit(f"<img{attributes}>")

    handle_startendtag = handle_starttag

    def _image(self, tag: str, attrs: list[tuple[str, str | None]]) -> BodyImage | None:
        if tag != "img":
            return None
        src = next((value or "" for name, value in attrs if name == "src"), "")
        key = _image_key(src)
        return self.images.get(key) if key else None


def render_body_images(*, html: str, for_email: bool) -> str:
    """Give each uploaded image its renditions: srcset and size on the site, the email
    rendition in mail. Images from elsewhere (imports, links) pass through unchanged."""
    keys = set(_KEY_RE.findall(html))
    if not keys:
        return html
    images = {image.key: image for image in BodyImage.objects.filter(key__in=keys)}
    if not images:
        return html
    rewriter = _ImageRewriter(images, for_email=for_email)
    rewriter.feed(html)
    rewriter.close()
    return "".join(rewriter.out)


def render_body(*, html: str, for_email: bool) -> str:
    """A stored body (for a free reader, already cut at the paywall) as the site or an
    email shows it: footnotes numbered and listed, uploaded images at the right size."""
    return render_body_images(html=render_footnotes(html=html), for_email=for_email)
