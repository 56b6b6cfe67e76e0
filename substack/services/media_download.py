"""Copying a picture from another site into our media storage (the Substack import).

Only http(s); the host must resolve to public addresses only (a private, loopback or
link-local one is refused unless IMPORT_MEDIA_ALLOW_PRIVATE, for tests and local
stand-ins), at each redirect too; at most MAX_IMAGE_BYTES of a JPEG, PNG, GIF or WebP
that Pillow can read; one timeout for each request. A file is stored under a name made
from its address, so the same picture is never downloaded twice.
"""

from __future__ import annotations

import hashlib
import ipaddress
import socket
from io import BytesIO
from urllib.parse import urljoin, urlsplit

import httpx
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from PIL import Image, UnidentifiedImageError

MAX_IMAGE_BYTES = 20 * 1024 * 1024
TIMEOUT_SECONDS = 20
MAX_REDIRECTS = 3
# Names that never denote a host on the internet: https://www.rfc-editor.org/rfc/rfc6761
RESERVED_TOP_LEVEL_NAMES = frozenset(["example", "invalid", "test", "local", "localhost"])
# Content types accepted, with the extension stored and the format Pillow must find.
IMAGE_TYPES = {
    "image/jpeg": ("jpg", "JPEG"),
    "image/png": ("png", "PNG"),
    "image/gif": ("gif", "GIF"),
    "image/webp": ("webp", "WEBP"),
}


class MediaDownloadError(Exception):
    """The picture could not be copied; the message says why, for the import report."""


def stored_image_url(*, url: str, folder: str) -> str | None:
    """The local copy of the picture at `url`, if it was downloaded before."""
    base = _base_name(url=url, folder=folder)
    for extension, _format in IMAGE_TYPES.values():
        if default_storage.exists(f"{base}.{extension}"):
            return default_storage.url(f"{base}.{extension}")
    return None


def download_image(*, url: str, folder: str) -> str:
    """Copy the picture at `url` into media storage; return its URL there."""
    known = stored_image_url(url=url, folder=folder)
    if known is not None:
        return known
    address = url
    with httpx.Client(timeout=TIMEOUT_SECONDS, follow_redirects=False) as client:
        for _hop in range(MAX_REDIRECTS + 1):
            _check_address(address)
            try:
                with client.stream("GET", address) as response:
                    if response.is_redirect and "location" in response.headers:
                        address = urljoin(address, response.headers["location"])
                        continue
                    data, content_type = _read_image(response)
                    break
            except httpx.TimeoutException:
                raise MediaDownloadError(f"no answer within {TIMEOUT_SECONDS} s") from None
            except httpx.HTTPError as exc:
                raise MediaDownloadError(f"could not be fetched ({exc})") from None
        else:
            raise MediaDownloadError(f"more than {MAX_REDIRECTS} redirects")
    extension, image_format = IMAGE_TYPES[content_type]
    try:
        with Image.open(BytesIO(data)) as image:
            found = image.format
            image.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise MediaDownloadError(f"not a readable image ({exc})") from None
    if found != image_format:
        raise MediaDownloadError(f"sent as {content_type} but is {found}")
    name = default_storage.save(
        f"{_base_name(url=url, folder=folder)}.{extension}", ContentFile(data)
    )
    return default_storage.url(name)


def _base_name(*, url: str, folder: str) -> str:
    return f"{folder}/{hashlib.sha256(url.encode()).hexdigest()[:32]}"


def _check_address(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise MediaDownloadError("not an http(s) address")
    host = parts.hostname.lower().rstrip(".")
    if host.rpartition(".")[2] in RESERVED_TOP_LEVEL_NAMES:
        raise MediaDownloadError(f"host {host} is a reserved name (RFC 2606, RFC 6761)")
    if settings.IMPORT_MEDIA_ALLOW_PRIVATE:
        return
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or 443, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise MediaDownloadError(f"host {parts.hostname} not found ({exc})") from None
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if not address.is_global:
            raise MediaDownloadError(
                f"host {parts.hostname} is a private or local address ({address}); "
                "set IMPORT_MEDIA_ALLOW_PRIVATE=true to allow it"
            )


def _read_image(response: httpx.Response) -> tuple[bytes, str]:
    if response.status_code != 200:
        raise MediaDownloadError(f"answered HTTP {response.status_code}")
    content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in IMAGE_TYPES:
        raise MediaDownloadError(f"not a JPEG, PNG, GIF or WebP image ({content_type or '?'})")
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_IMAGE_BYTES:
        raise MediaDownloadError(f"larger than {MAX_IMAGE_BYTES // (1024 * 1024)} MB")
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > MAX_IMAGE_BYTES:
            raise MediaDownloadError(f"larger than {MAX_IMAGE_BYTES // (1024 * 1024)} MB")
        chunks.append(chunk)
    return b"".join(chunks), content_type
