"""Uploaded images are bounded in pixels and bytes: covers, logos, avatars."""

from __future__ import annotations

import io
import os

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from PIL import Image

from newsletter.models import Article, Author
from publication.models import Publication
from publication.validators import MAX_IMAGE_BYTES
from tests.factories import AuthorFactory, SectionFactory
from tests.newsletter.test_admin import _add_form_data, _inline_management_data

pytestmark = pytest.mark.django_db


def _png(width: int, height: int, *, noise: bool = False) -> bytes:
    if noise:
        image = Image.frombytes("RGB", (width, height), os.urandom(width * height * 3))
    else:
        image = Image.new("1", (width, height))
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=not noise)
    return out.getvalue()


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """A 100-megapixel PNG: one colour, so it compresses to under 100 KB."""
    data = _png(10_000, 10_000)
    assert len(data) < 150_000
    return data


def _upload(data: bytes, name: str = "cover.png") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data, content_type="image/png")


def _post_article(editor_client, cover: SimpleUploadedFile):
    add_url = reverse("admin:newsletter_article_add")
    page = editor_client.get(add_url)
    return editor_client.post(
        add_url,
        {
            **_add_form_data(section=SectionFactory().pk, authors=[AuthorFactory().pk]),
            **_inline_management_data(page),
            "cover_image": cover,
        },
    )


def test_a_100_megapixel_cover_is_refused_with_a_clear_error(editor_client, bomb, settings):
    response = _post_article(editor_client, _upload(bomb))

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors["cover_image"]
    assert "10,000 by 10,000 pixels (100 megapixels)" in errors[0]
    assert "at most 25 megapixels" in errors[0]
    assert not Article.objects.exists()
    assert not any(
        (settings.MEDIA_ROOT and os.walk(settings.MEDIA_ROOT))
        and [f for _, _, files in os.walk(settings.MEDIA_ROOT) for f in files]
    )


def test_an_ordinary_cover_is_accepted(editor_client):
    response = _post_article(editor_client, _upload(_png(1600, 900)))
    assert response.status_code == 302, response.context["adminform"].form.errors
    assert Article.objects.get().cover_image.width == 1600


def test_a_cover_over_the_byte_limit_is_refused(editor_client):
    side = int((MAX_IMAGE_BYTES / 3) ** 0.5) + 50
    data = _png(side, side, noise=True)
    assert len(data) > MAX_IMAGE_BYTES
    response = _post_article(editor_client, _upload(data))
    errors = response.context["adminform"].form.errors["cover_image"]
    assert "images may be at most 10.0" in errors[0]


def test_a_huge_logo_and_a_huge_avatar_are_refused_too(editor_client, bomb):
    publication = Publication.load()
    url = reverse("admin:publication_publication_change", args=[publication.pk])
    page = editor_client.get(url)
    data = {
        key: value
        for key, value in page.context["adminform"].form.initial.items()
        if value is not None and key != "logo"
    }
    response = editor_client.post(url, {**data, "logo": _upload(bomb, "logo.png")})
    assert "100 megapixels" in response.context["adminform"].form.errors["logo"][0]
    publication.refresh_from_db()
    assert not publication.logo

    author = AuthorFactory()
    url = reverse("admin:newsletter_author_change", args=[author.pk])
    response = editor_client.post(
        url,
        {
            "display_name": author.display_name,
            "slug": author.slug,
            "bio": "",
            "user": "",
            "avatar": _upload(bomb, "me.png"),
        },
    )
    assert "100 megapixels" in response.context["adminform"].form.errors["avatar"][0]
    assert not Author.objects.get(pk=author.pk).avatar


def test_a_cover_past_pillow_s_own_limit_gets_the_size_message_not_corrupted(editor_client):
    # Over 179 megapixels Pillow refuses to open the file at all (a decompression bomb).
    response = _post_article(editor_client, _upload(_png(15_000, 12_000)))

    assert response.status_code == 200
    (error,) = response.context["adminform"].form.errors["cover_image"]
    assert "more than 178 megapixels" in error, error
    assert "at most 25 megapixels" in error
    assert not Article.objects.exists()


CAMERA = "Broadside Test Camera"


def _photo_with_gps(fmt: str = "JPEG") -> bytes:
    exif = Image.Exif()
    exif[0x010F] = CAMERA  # Make
    exif[0x8825] = {1: "N", 2: (38.0, 42.0, 30.0), 3: "W", 4: (9.0, 8.0, 20.0)}
    buffer = io.BytesIO()
    Image.new("RGB", (640, 480), (40, 90, 160)).save(
        buffer, fmt, exif=exif, xmp=b"<x:xmpmeta>" + CAMERA.encode() + b"</x:xmpmeta>"
    )
    assert CAMERA.encode() in buffer.getvalue()
    return buffer.getvalue()


def _assert_no_location_or_camera(field) -> None:
    with field.open("rb") as stored:
        data = stored.read()
    assert CAMERA.encode() not in data
    with Image.open(io.BytesIO(data)) as image:
        exif = image.getexif()
        assert 0x8825 not in exif and 0x010F not in exif
        assert image.size == (640, 480)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_a_cover_logo_or_avatar_keeps_no_location_or_camera(editor_client, fmt):
    name = f"photo.{fmt.lower()}"
    response = _post_article(editor_client, _upload(_photo_with_gps(fmt), name))
    assert response.status_code == 302, response.context["adminform"].form.errors
    _assert_no_location_or_camera(Article.objects.get().cover_image)

    author = AuthorFactory()
    response = editor_client.post(
        reverse("admin:newsletter_author_change", args=[author.pk]),
        {
            "display_name": author.display_name,
            "slug": author.slug,
            "bio": "",
            "user": "",
            "avatar": _upload(_photo_with_gps(fmt), name),
        },
    )
    assert response.status_code == 302
    _assert_no_location_or_camera(Author.objects.get(pk=author.pk).avatar)


def test_an_animated_gif_cover_keeps_its_frames_when_its_metadata_goes(editor_client):
    frames = [Image.new("RGB", (64, 48), colour) for colour in ("red", "lime", "blue")]
    buffer = io.BytesIO()
    frames[0].save(
        buffer, "GIF", save_all=True, append_images=frames[1:], duration=120, loop=0,
        comment=CAMERA.encode(),
    )  # fmt: skip
    response = _post_article(editor_client, _upload(buffer.getvalue(), "moving.gif"))
    assert response.status_code == 302, response.context["adminform"].form.errors
    with Article.objects.get().cover_image.open("rb") as stored:
        data = stored.read()
    assert CAMERA.encode() not in data
    with Image.open(io.BytesIO(data)) as image:
        assert (image.format, image.n_frames, image.size) == ("GIF", 3, (64, 48))
