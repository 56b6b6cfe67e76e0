"""Import a Substack export (a .zip or its unpacked folder), ARCHITECTURE.md flow 9.

What comes across:
- `posts.csv` + `posts/<post_id>.html`: published posts are archived as published
  articles without being emailed or posted again (never through `publish_article`);
  unpublished ones become drafts with the defaults of a new article. The
  `paywall-jump` element becomes the paywall marker; pictures are copied into the
  media storage (`media_download`) and the post points at the copies, captions and
  alt text kept (one that fails is reported and keeps its address); footnotes and
  YouTube/Vimeo embeds are kept, other embeds become links.
- The subscriber lists, in either of Substack's two layouts:
  `email, active_subscription, expiry, email_disabled, created_at` and
  `email, expiry, email_disabled, stripe_connected_customer_id, type`.
  `email_disabled` readers are imported unsubscribed (never emailed) but can still
  sign in and read what they paid for.

Memberships. Substack keeps a writer's paid subscriptions in the writer's own Stripe
account, so when Stripe is configured (the same account) each paid reader's customer
(`stripe_connected_customer_id`) is looked up there and every live subscription
(active, trialing, past_due) is adopted: recorded as a Stripe membership through
`sync_membership_from_stripe`, as a webhook would, with a Plan for its price made from
the price and its product (`imported_from` set, not offered on /upgrade/). From then on
the ordinary webhooks keep it true. Lookups run one reader at a time outside the
batch transactions, paced under Stripe's rate limits.

Readers with no live subscription (none, all ended, the customer unknown, or Stripe not
configured), and comp and gift readers, get a membership that grants access until the
export's `expiry` (none: no end): kind GIFT for gifts and COMP otherwise,
`imported_from` `substack:<type>`. Everything is keyed (article `external_id`
`substack:<post number>`, subscriber address, imported memberships per subscriber), so
running the import again changes nothing and asks Stripe nothing.
"""

from __future__ import annotations

import re
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from html import escape as html_escape
from html.parser import HTMLParser
from pathlib import Path, PurePosixPath
from typing import IO, Any
from urllib.parse import urlsplit

from django.db import IntegrityError, transaction
from django.db.models import Count, Max, Min, Q
from django.utils import timezone
from django.utils.text import slugify

from newsletter.models import Article
from newsletter.services.content import (
    EMBED_SRC_RE,
    PAYWALL_MARKER,
    footnote_id,
    footnote_ref_id,
    sanitize_body,
)
from subscriptions import stripe_client
from subscriptions.models import Membership, Plan, Subscriber
from subscriptions.services.access import paid_subscribers
from subscriptions.services.addresses import InvalidAddress, clean_address
from subscriptions.services.imports import (
    MAX_LINE_BYTES,
    ImportFileError,
    ImportReport,
    SubscriberRow,
    import_subscriber_rows,
    parse_bool,
    parse_datetime_value,
    read_csv,
)
from subscriptions.services.media_download import (
    MediaDownloadError,
    download_image,
    stored_image_url,
)
from subscriptions.services.memberships import (
    lock_stripe_object,
    plan_for_price,
    subscription_price_id,
    sync_membership_from_stripe,
)

SOURCE = "substack"
MAX_POST_BYTES = 20 * 1024 * 1024
# What reading a damaged archive member raises (bad CRC, corrupt or truncated data).
DAMAGED_MEMBER = (zipfile.BadZipFile, zlib.error, EOFError, OSError)

# Elements that never have an end tag: https://html.spec.whatwg.org/#void-elements
_VOID_ELEMENTS = frozenset(
    [
        "area",
        "base",
        "br",
        "col",
        "embed",
        "hr",
        "img",
        "input",
        "link",
        "meta",
        "source",
        "track",
        "wbr",
    ]
)

AUDIENCE_VISIBILITY = {
    "everyone": Article.Visibility.PUBLIC,
    "only_free": Article.Visibility.SUBSCRIBERS,
    "only_paid": Article.Visibility.PAID,
    "founding": Article.Visibility.PAID,
}

PAID_FORMAT = "paid subscribers"
LIST_FORMAT = "email list"
MEMBERSHIP_KINDS = {
    "paid": Membership.Kind.COMP,
    "comp": Membership.Kind.COMP,
    "gift": Membership.Kind.GIFT,
}


# Stripe's statuses of a subscription that is paid for (past_due: a renewal is retried).
LIVE_STATUSES = ("active", "trialing", "past_due")
# Stripe allows 100 read requests a second in live mode and 25 in test mode
# (https://docs.stripe.com/rate-limits); the import stays under both.
STRIPE_REQUESTS_PER_SECOND = 20


@dataclass
class SubstackReport(ImportReport):
    """An import's counts, with what became of the paid readers' Stripe subscriptions."""

    adopted: int = 0  # Stripe subscriptions now mirrored as memberships
    comp_until_expiry: int = 0  # paid readers granted access until the export's expiry
    customers_not_found: list[str] = field(default_factory=list)
    subscriptions_canceled: int = 0  # paid readers whose subscriptions had all ended
    plans_created: list[str] = field(default_factory=list)
    stripe_lookups: int = 0
    embeds_kept: int = 0  # YouTube and Vimeo players, as privacy-enhanced embeds
    embeds_linked: int = 0  # other embeds, now links (each listed as a warning)
    images_downloaded: int = 0
    images_already_copied: int = 0
    images_failed: int = 0  # each listed as a warning with its post
    image_copies: dict[str, str] = field(default_factory=dict)  # address -> local URL
    dry_run: bool = False

    def summary_lines(self) -> list[str]:
        lines = super().summary_lines()
        if self.images_downloaded or self.images_already_copied or self.images_failed:
            lines += [
                f"Pictures downloaded: {self.images_downloaded}",
                f"Pictures already downloaded: {self.images_already_copied}",
                f"Pictures that could not be downloaded (kept where they are): "
                f"{self.images_failed}",
            ]
        if self.embeds_kept or self.embeds_linked:
            lines += [
                f"Video embeds kept (YouTube, Vimeo): {self.embeds_kept}",
                f"Other embeds replaced by a link: {self.embeds_linked}",
            ]
        if self.stripe_lookups or self.adopted or self.comp_until_expiry:
            lines += [
                f"Stripe customers looked up: {self.stripe_lookups}",
                f"Stripe subscriptions adopted: {self.adopted}",
                f"Paid readers with every subscription ended: {self.subscriptions_canceled}",
                f"Stripe customers not found: {len(self.customers_not_found)}",
                *(f"  not found: {c}" for c in self.customers_not_found[:MAX_LISTED]),
                f"Paid readers given access until the export's expiry: {self.comp_until_expiry}",
            ]
            lines += [f"Plan created (not offered on /upgrade/): {p}" for p in self.plans_created]
        if self.dry_run:
            lines.append("Dry run: nothing was written.")
        return lines


MAX_LISTED = 1000


@dataclass(frozen=True)
class PendingPaidReader:
    """A paid reader whose Stripe customer is looked up once the lists are in."""

    subscriber_id: int
    customer_id: str
    expires_at: datetime | None


class _Pacer:
    """Spaces calls at least 1/rate seconds apart."""

    def __init__(self, *, per_second: float) -> None:
        self.interval = 1 / per_second
        self.last = 0.0

    def wait(self) -> None:
        delay = self.last + self.interval - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        self.last = time.monotonic()


class _DryRun(Exception):
    """Raised to roll a dry run back."""


class Export:
    """Read access to the files of an export, from a zip archive or a folder."""

    def __init__(self, *, files: dict[str, str], zip_file: zipfile.ZipFile | None, root: Path):
        self.files = files  # export name (posix, relative) -> name in zip or path on disk
        self.zip_file = zip_file
        self.root = root

    def __contains__(self, name: str) -> bool:
        return name in self.files

    def open(self, name: str) -> IO[bytes]:
        if self.zip_file is not None:
            return self.zip_file.open(self.files[name])
        return (self.root / self.files[name]).open("rb")

    def size(self, name: str) -> int:
        if self.zip_file is not None:
            return self.zip_file.getinfo(self.files[name]).file_size
        return (self.root / self.files[name]).stat().st_size


def _safe_name(name: str) -> str | None:
    """The member name as a relative posix path, or None if it tries to leave the export."""
    if "\\" in name or name.startswith("/") or re.match(r"^[a-zA-Z]:", name):
        return None
    parts = PurePosixPath(name).parts
    if any(part == ".." for part in parts):
        return None
    return str(PurePosixPath(*parts)) if parts else None


@contextmanager
def open_export(*, path: Path, report: ImportReport) -> Iterator[Export]:
    if not path.exists():
        raise ImportFileError(f"{path}: no such file or folder")
    raw: dict[str, str] = {}
    zip_file = None
    if path.is_dir():
        for file in sorted(path.rglob("*")):
            if file.is_file() and not file.is_symlink():
                raw[file.relative_to(path).as_posix()] = file.relative_to(path).as_posix()
    else:
        try:
            zip_file = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as exc:
            raise ImportFileError(f"{path}: not a zip archive or folder ({exc})") from None
        for info in zip_file.infolist():
            if info.is_dir():
                continue
            safe = _safe_name(info.filename)
            if safe is None:
                report.reject(
                    file=info.filename,
                    line=0,
                    message="unsafe path in the archive (outside the export); skipped",
                )
                continue
            raw[safe] = info.filename
    # Some archives wrap everything in one top folder: read posts.csv's folder as the root.
    candidates = sorted((n for n in raw if PurePosixPath(n).name == "posts.csv"), key=len)
    prefix = str(PurePosixPath(candidates[0]).parent) + "/" if candidates else ""
    if prefix == "./":
        prefix = ""
    files = {n[len(prefix) :]: target for n, target in raw.items() if n.startswith(prefix)}
    try:
        yield Export(files=files, zip_file=zip_file, root=path)
    finally:
        if zip_file is not None:
            zip_file.close()


def import_substack(
    *,
    path: Path,
    dry_run: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
) -> SubstackReport:
    """Import posts and subscribers from a Substack export. Raises ImportFileError.

    `dry_run` does everything (Stripe is only read) and rolls it back, so the report
    says what a real run would do. `progress(stage, done, total)` is told how far the
    posts (with the pictures they download) and the Stripe lookups are.
    """
    report = SubstackReport(dry_run=dry_run)
    if not dry_run:
        _import_all(path=path, report=report, progress=progress)
        return report
    try:
        with transaction.atomic():
            _import_all(path=path, report=report, progress=progress)
            raise _DryRun
    except _DryRun:
        pass
    return report


def _import_all(
    *, path: Path, report: SubstackReport, progress: Callable[[str, int, int], None] | None
) -> None:
    pending: list[PendingPaidReader] = []
    with open_export(path=path, report=report) as export:
        if "posts.csv" in export:
            import_posts(export=export, report=report, progress=progress)
        else:
            report.warn(file="posts.csv", line=0, message="not in the export; no posts imported")
        lists = _subscriber_lists(export=export, report=report)
        for name, layout in sorted(lists, key=lambda item: (item[1] != PAID_FORMAT, item[0])):
            _import_subscriber_file(
                export=export, name=name, layout=layout, report=report, pending=pending
            )
    adopt_stripe_subscriptions(readers=pending, report=report, progress=progress)


# --- Posts --------------------------------------------------------------------------


def _classes(attrs: list[tuple[str, str | None]]) -> list[str]:
    return [c for name, value in attrs if name == "class" for c in (value or "").lower().split()]


def _attr(attrs: list[tuple[str, str | None]], wanted: str) -> str:
    return next((value or "" for name, value in attrs if name == wanted), "")


def _footnote_number(*values: str) -> str | None:
    """The number at the end of Substack's `#footnote-3` / `footnote-anchor-3`."""
    for value in values:
        number = value.rpartition("-")[2]
        if number.isdigit() and len(number) <= 4 and "footnote" in value:
            return str(int(number))
    return None


_YOUTUBE_HOSTS = frozenset(
    [
        "youtube.com",
        "www.youtube.com",
        "m.youtube.com",
        "youtube-nocookie.com",
        "www.youtube-nocookie.com",
    ]
)


def _player_src(src: str) -> str | None:
    """A YouTube or Vimeo player's address as its privacy-enhanced embed, or None."""
    parts = urlsplit(src.strip())
    if parts.scheme not in ("http", "https"):
        return None
    host = (parts.hostname or "").lower()
    segments = [s for s in parts.path.split("/") if s]
    player = None
    if host in _YOUTUBE_HOSTS and len(segments) == 2 and segments[0] == "embed":
        player = f"https://www.youtube-nocookie.com/embed/{segments[1]}"
    elif host == "player.vimeo.com" and len(segments) == 2 and segments[0] == "video":
        player = f"https://player.vimeo.com/video/{segments[1]}?dnt=1"
    return player if player and EMBED_SRC_RE.fullmatch(player) else None


class _SubstackRewriter(HTMLParser):
    """Re-emits a post's HTML with Substack's own elements turned into ours.

    - The first element whose class list has `paywall-jump` becomes `PAYWALL_MARKER`
      (its contents, Substack's "subscribe to keep reading" box, are dropped); later
      ones are dropped.
    - Footnotes: a `footnote-anchor` link becomes `<sup><a id="fnref-N" href="#fn-N">`,
      and a `footnote` block (its `footnote-number` link and `footnote-content`)
      becomes the paragraph `<p id="fn-N"><a href="#fnref-N">N.</a> ...`, the ids
      `sanitize_body` keeps.
    - A YouTube or Vimeo iframe becomes that player's privacy-enhanced embed; any other
      iframe a link to what it showed (listed in `changes`).

    Everything else is written back as it came. One pass through Python's HTML
    tokenizer, so the time grows with the length of the post whatever its markup
    (a pattern match over unclosed elements grew with its square). An element left
    unclosed at the end keeps its contents, as there is no end to cut them at.
    """

    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)
        self.out: list[str] = []
        self.marker_written = False
        # Inside a paywall element: its tag name, the depth of that name, and what
        # came inside it (written back only if it never closes).
        self.inside: str | None = None
        self.depth = 0
        self.held: list[str] = []
        self.footnotes = 0
        self.closing_reference = False  # the next </a> ends a footnote reference
        self.note_depth = 0  # nested <div>s of the footnote block we are in
        self.note_number: str | None = None  # its number, until its paragraph opens
        self.swallowing: str | None = None  # dropping everything up to this end tag
        self.embeds_kept = 0
        self.changes: list[str] = []  # what an editor should know was changed

    def _emit(self, text: str) -> None:
        if self.swallowing:
            return
        (self.held if self.inside else self.out).append(text)

    def _write_marker(self) -> None:
        if not self.marker_written:
            self.out.append(PAYWALL_MARKER)
            self.marker_written = True

    def _open_note(self, *, empty: bool = False) -> None:
        """The note's paragraph, carrying its id and the link back to the reference."""
        number = self.note_number
        if number is None:
            return
        self.note_number = None
        self.footnotes += 1
        self._emit(
            f'<p id="{footnote_id(number)}"><a href="#{footnote_ref_id(number)}">{number}.</a>'
            + ("</p>" if empty else " ")
        )

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        classes = _classes(attrs)
        if "paywall-jump" in classes:
            self._write_marker()
            if self.inside is None and tag not in _VOID_ELEMENTS:
                self.inside, self.depth = tag, 1
            elif self.inside == tag:
                self.depth += 1
            return
        if self.inside == tag:
            self.depth += 1
        if self.note_depth:
            if tag == "div":
                self.note_depth += 1
                return
            if tag == "a" and "footnote-number" in classes:
                number = _footnote_number(_attr(attrs, "id"), _attr(attrs, "href"))
                self.note_number = number or self.note_number
                self.swallowing = "a"
                return
            if tag == "p" and self.note_number is not None:
                self._open_note()
                return
        elif tag == "div" and "footnote" in classes:
            self.note_depth = 1
            return
        if tag == "iframe" and not self.swallowing:
            self._embed(_attr(attrs, "src"), attrs)
            self.swallowing = "iframe"
            return
        if tag == "a" and "footnote-anchor" in classes:
            number = _footnote_number(_attr(attrs, "href"), _attr(attrs, "id"))
            if number is not None:
                self._emit(f'<sup><a id="{footnote_ref_id(number)}" href="#{footnote_id(number)}">')
                self.closing_reference = True
                return
        self._emit(self.get_starttag_text() or "")

    def _embed(self, src: str, attrs: list[tuple[str, str | None]]) -> None:
        """A video player as our privacy-enhanced embed; anything else as a link to it."""
        player = _player_src(src)
        if player is not None:
            size = "".join(
                f' {name}="{value}"'
                for name, value in attrs
                if name in ("width", "height") and (value or "").isdigit()
            )
            self._emit(f'<iframe src="{player}"{size} allowfullscreen></iframe>')
            self.embeds_kept += 1
            return
        parts = urlsplit(src.strip())
        if parts.scheme in ("http", "https") and parts.hostname:
            self._emit(
                f'<p><a href="{html_escape(src.strip())}">Embedded content from '
                f"{html_escape(parts.hostname)}</a></p>"
            )
            self.changes.append(f"embed from {parts.hostname} replaced by a link to it")
        else:
            self.changes.append("an embed without a web address was removed")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "iframe":
            self._embed(_attr(attrs, "src"), attrs)
            return
        if "paywall-jump" in _classes(attrs):
            self._write_marker()
            return
        self._emit(self.get_starttag_text() or "")

    def handle_endtag(self, tag: str) -> None:
        if self.inside == tag:
            self.depth -= 1
            if self.depth == 0:
                self.inside, self.held = None, []
                return
        if self.swallowing == tag:
            self.swallowing = None
            return
        if tag == "a" and self.closing_reference:
            self.closing_reference = False
            self._emit("</a></sup>")
            return
        if self.note_depth and tag == "div":
            self.note_depth -= 1
            if self.note_depth == 0:
                self._open_note(empty=True)  # a note without a paragraph keeps its target
            return
        self._emit(f"</{tag}>")

    def handle_data(self, data: str) -> None:
        self._emit(data)

    def handle_entityref(self, name: str) -> None:
        self._emit(f"&{name};")

    def handle_charref(self, name: str) -> None:
        self._emit(f"&#{name};")

    def handle_comment(self, data: str) -> None:
        pass  # comments carry nothing a reader sees (and nh3 drops them anyway)

    def handle_decl(self, decl: str) -> None:
        pass

    def result(self) -> str:
        self.close()
        return "".join(self.out + self.held)


MEDIA_FOLDER = "substack"


class _ImageLocaliser(HTMLParser):
    """Re-emits a sanitised body with each picture pointing at its local copy.

    `copy(url)` returns the local URL or raises MediaDownloadError (the original
    address is then kept). A link wrapped around a picture that pointed at the same
    host (Substack links each image to its full-size version there) follows it.
    """

    def __init__(self, *, copy: Callable[[str], str | None]) -> None:
        super().__init__(convert_charrefs=False)
        self.copy = copy
        self.out: list[str] = []
        self.link: tuple[int, list[tuple[str, str | None]]] | None = None

    @staticmethod
    def _tag(tag: str, attrs: list[tuple[str, str | None]], end: str = ">") -> str:
        values = "".join(
            f' {name}="{html_escape(value)}"' if value is not None else f" {name}"
            for name, value in attrs
        )
        return f"<{tag}{values}{end}"

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self._image(attrs, end=">")
            return
        if tag == "a":
            self.link = (len(self.out), attrs)
        self.out.append(self.get_starttag_text() or "")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self._image(attrs, end=" />")
            return
        self.out.append(self.get_starttag_text() or "")

    def _image(self, attrs: list[tuple[str, str | None]], *, end: str) -> None:
        src = _attr(attrs, "src")
        local = self.copy(src) if src else None
        if local is None:
            self.out.append(self._tag("img", attrs, end))
            return
        self.out.append(self._tag("img", [(n, local if n == "src" else v) for n, v in attrs], end))
        if self.link is not None:
            index, link_attrs = self.link
            href = _attr(link_attrs, "href")
            if urlsplit(href).hostname == urlsplit(src).hostname or "substack" in (
                urlsplit(href).hostname or ""
            ):
                self.out[index] = self._tag(
                    "a", [(n, local if n == "href" else v) for n, v in link_attrs]
                )

    def handle_endtag(self, tag: str) -> None:
        if tag == "a":
            self.link = None
        self.out.append(f"</{tag}>")

    def handle_data(self, data: str) -> None:
        self.out.append(data)

    def handle_entityref(self, name: str) -> None:
        self.out.append(f"&{name};")

    def handle_charref(self, name: str) -> None:
        self.out.append(f"&#{name};")


def localise_images(*, body: str, file: str, report: SubstackReport) -> str:
    """The body with its pictures copied into media storage (a dry run only counts
    them). A picture that cannot be copied is reported and keeps its address."""

    def copy(url: str) -> str | None:
        if not url.startswith(("http://", "https://")):
            return None  # already ours (site-relative)
        if url in report.image_copies:
            return report.image_copies[url]
        known = stored_image_url(url=url, folder=MEDIA_FOLDER)
        if known is not None:
            report.images_already_copied += 1
            report.image_copies[url] = known
            return known
        if report.dry_run:
            report.images_downloaded += 1
            return None
        try:
            local = download_image(url=url, folder=MEDIA_FOLDER)
        except MediaDownloadError as exc:
            report.images_failed += 1
            report.warn(file=file, line=0, message=f"picture {url} kept where it is: {exc}")
            return None
        report.images_downloaded += 1
        report.image_copies[url] = local
        return local

    if "<img" not in body:
        return body
    localiser = _ImageLocaliser(copy=copy)
    localiser.feed(body)
    localiser.close()
    return sanitize_body(html="".join(localiser.out))


@dataclass(frozen=True)
class ConvertedPost:
    body: str
    embeds_kept: int
    changes: list[str]


def convert_post(*, html: str) -> ConvertedPost:
    """Substack post HTML -> a sanitised article body, and what was changed in it."""
    rewriter = _SubstackRewriter()
    rewriter.feed(html)
    body = sanitize_body(html=rewriter.result())
    return ConvertedPost(body=body, embeds_kept=rewriter.embeds_kept, changes=rewriter.changes)


def convert_post_body(*, html: str) -> str:
    """Substack post HTML -> a sanitised article body with our paywall marker."""
    return convert_post(html=html).body


def _unique_slug(*, slug: str, number: str) -> str:
    slug = slugify(slug)[:180] or f"post-{number}"
    if Article.objects.filter(slug=slug).exists():
        slug = f"{slug}-{number}"
    return slug


def import_posts(
    *,
    export: Export,
    report: SubstackReport,
    progress: Callable[[str, int, int], None] | None = None,
) -> None:
    """`progress("Posts", done, 0)` after each post (0: the total is not known ahead)."""
    file = "posts.csv"
    try:
        with export.open(file) as stream:
            for done, (line, row) in enumerate(
                read_csv(
                    stream=stream,
                    file=file,
                    report=report,
                    required=["post_id", "post_date", "is_published", "title"],
                ),
                start=1,
            ):
                _import_post(export=export, line=line, row=row, report=report)
                if progress is not None:
                    progress("Posts", done, 0)
    except ImportFileError as exc:
        report.reject(file=file, line=1, message=str(exc))
    except DAMAGED_MEMBER as exc:
        report.reject(file=file, line=0, message=f"damaged in the archive ({exc})")


def _import_post(*, export: Export, line: int, row: dict[str, str], report: SubstackReport) -> None:
    file = "posts.csv"
    post_id = row["post_id"]
    number, _, slug = post_id.partition(".")
    if not number.isdigit():
        report.reject(file=file, line=line, message=f"post_id {post_id!r} is not <number>.<slug>")
        return
    external_id = f"substack:{number}"
    if Article.objects.filter(external_id=external_id).exists():
        report.articles_unchanged += 1
        return
    try:
        published = parse_bool(row["is_published"])
        post_date = parse_datetime_value(row["post_date"])
    except ValueError as exc:
        report.reject(file=file, line=line, message=f"bad is_published or post_date ({exc})")
        return
    if published and post_date is None:
        report.reject(file=file, line=line, message="a published post needs a post_date")
        return
    audience = (row.get("audience") or "everyone").lower()
    visibility = AUDIENCE_VISIBILITY.get(audience)
    if visibility is None:
        # Unknown audiences are treated as paid, so nothing paid is ever shown for free.
        visibility = Article.Visibility.PAID
        report.warn(file=file, line=line, message=f"unknown audience {audience!r}; made paid")
    html_name = f"posts/{post_id}.html"
    html = ""
    if html_name in export:
        if export.size(html_name) > MAX_POST_BYTES:
            report.reject(file=html_name, line=0, message="larger than 20 MB; skipped")
            return
        try:
            with export.open(html_name) as stream:
                raw = stream.read()
        except DAMAGED_MEMBER as exc:
            report.reject(file=html_name, line=0, message=f"damaged in the archive ({exc})")
            return
        try:
            html = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            report.reject(file=html_name, line=0, message="not UTF-8 text; post skipped")
            return
    elif published:
        report.reject(file=file, line=line, message=f"{html_name} is missing from the export")
        return
    else:
        report.warn(file=file, line=line, message=f"{html_name} is missing; draft left empty")
    title = row["title"] or ("Untitled draft" if not published else "")
    if not title:
        report.reject(file=file, line=line, message="a published post needs a title")
        return
    converted = convert_post(html=html)
    article = Article(
        title=title[:300],
        subtitle=row.get("subtitle", "")[:500],
        body=localise_images(body=converted.body, file=html_name, report=report),
        visibility=visibility,
        external_id=external_id,
    )
    if published:
        assert post_date is not None
        article.status = Article.Status.PUBLISHED
        article.published_at = post_date
        # Archived, not distributed: it already went out from Substack.
        article.email_audience = Article.EmailAudience.NOBODY
        article.post_to_telegram = False
    try:
        with transaction.atomic():
            article.slug = _unique_slug(slug=slug or title, number=number)
            article.save()
    except IntegrityError as exc:
        report.reject(file=file, line=line, message=f"could not be saved ({exc})")
        return
    report.articles_created += 1
    report.embeds_kept += converted.embeds_kept
    for change in converted.changes:
        report.embeds_linked += 1
        report.warn(file=html_name, line=0, message=change)


# --- Subscribers --------------------------------------------------------------------


def _subscriber_lists(*, export: Export, report: ImportReport) -> list[tuple[str, str]]:
    found = []
    for name in export.files:
        if not name.lower().endswith(".csv") or name == "posts.csv" or name.startswith("posts/"):
            continue
        try:
            with export.open(name) as stream:
                header = stream.readline(MAX_LINE_BYTES)
        except DAMAGED_MEMBER as exc:
            report.reject(file=name, line=0, message=f"damaged in the archive ({exc})")
            continue
        first = header.decode("utf-8-sig", errors="replace").lower()
        columns = {c.strip().strip('"') for c in first.split(",")}
        if "email" in columns and ({"type", "stripe_connected_customer_id"} & columns):
            found.append((name, PAID_FORMAT))
        elif "email" in columns and "active_subscription" in columns:
            found.append((name, LIST_FORMAT))
        elif "email" in columns:
            report.reject(
                file=name,
                line=1,
                message="missing column(s): a subscriber list needs active_subscription "
                "(email list) or type (paid subscribers); file skipped",
            )
        else:
            report.warn(file=name, line=1, message="not a subscriber list; skipped")
    return found


def _rows(
    *, export: Export, name: str, layout: str, report: ImportReport
) -> Iterator[SubscriberRow]:
    required = ["email", "expiry", "email_disabled"]
    required += ["type"] if layout == PAID_FORMAT else ["active_subscription"]
    with export.open(name) as stream:
        for line, row in read_csv(stream=stream, file=name, report=report, required=required):
            try:
                email = clean_address(row["email"])
            except InvalidAddress as exc:
                report.reject(file=name, line=line, message=str(exc))
                continue
            try:
                expiry = parse_datetime_value(row["expiry"])
                created_at = parse_datetime_value(row.get("created_at", ""))
            except ValueError:
                report.reject(file=name, line=line, message="expiry or created_at is not a date")
                continue
            try:
                disabled = parse_bool(row["email_disabled"])
                if layout == PAID_FORMAT:
                    kind = row["type"].lower()
                    if kind not in MEMBERSHIP_KINDS:
                        raise ValueError(f"type {row['type']!r} is not paid, comp or gift")
                else:
                    kind = "paid" if parse_bool(row["active_subscription"]) else ""
            except ValueError as exc:
                report.reject(file=name, line=line, message=str(exc))
                continue
            yield SubscriberRow(
                file=name,
                line=line,
                email=email,
                # Not in every export; kept when the list has it.
                name=row.get("name", ""),
                created_at=created_at,
                status=Subscriber.Status.UNSUBSCRIBED if disabled else Subscriber.Status.ACTIVE,
                status_reason="email disabled on Substack" if disabled else "",
                stripe_customer_id=row.get("stripe_connected_customer_id", ""),
                extra={"kind": kind, "expires_at": expiry},
            )


def _import_subscriber_file(
    *,
    export: Export,
    name: str,
    layout: str,
    report: SubstackReport,
    pending: list[PendingPaidReader],
) -> None:
    try:
        import_subscriber_rows(
            rows=_rows(export=export, name=name, layout=layout, report=report),
            source=SOURCE,
            report=report,
            after_batch=lambda rows, subscribers: _add_memberships(
                rows=rows, subscribers=subscribers, report=report, pending=pending
            ),
        )
    except ImportFileError as exc:
        report.reject(file=name, line=1, message=str(exc))
    except DAMAGED_MEMBER as exc:
        # Batches before the damage are imported; a re-run from a good copy adds the rest.
        report.reject(file=name, line=0, message=f"damaged in the archive ({exc})")


def _add_memberships(
    *,
    rows: list[SubscriberRow],
    subscribers: dict[str, Subscriber],
    report: SubstackReport,
    pending: list[PendingPaidReader],
) -> None:
    wanted = [row for row in rows if row.extra.get("kind")]
    if not wanted:
        return
    ids = [subscribers[row.email].pk for row in wanted]
    already = set(
        Membership.objects.filter(
            subscriber_id__in=ids, imported_from__startswith=SOURCE
        ).values_list("subscriber_id", flat=True)
    )
    look_up = stripe_client.is_configured()
    new = []
    for row in wanted:
        subscriber = subscribers[row.email]
        if subscriber.pk in already:
            continue
        already.add(subscriber.pk)
        expires_at: datetime | None = row.extra["expires_at"]
        kind = row.extra["kind"]
        if row.stripe_customer_id and not subscriber.stripe_customer_id:
            taken = Subscriber.objects.filter(stripe_customer_id=row.stripe_customer_id).exists()
            if not taken:
                Subscriber.objects.filter(pk=subscriber.pk).update(
                    stripe_customer_id=row.stripe_customer_id
                )
        if kind == "paid" and row.stripe_customer_id and look_up:
            pending.append(
                PendingPaidReader(
                    subscriber_id=subscriber.pk,
                    customer_id=row.stripe_customer_id,
                    expires_at=expires_at,
                )
            )
            continue
        if kind == "paid":
            report.comp_until_expiry += 1
        new.append(
            _granted_membership(subscriber_id=subscriber.pk, kind=kind, expires_at=expires_at)
        )
    Membership.objects.bulk_create(new)
    report.memberships_created += len(new)


def _granted_membership(
    *, subscriber_id: int, kind: str, expires_at: datetime | None
) -> Membership:
    """Access until the export's expiry, as Substack granted it."""
    return Membership(
        subscriber_id=subscriber_id,
        kind=MEMBERSHIP_KINDS[kind],
        status=(
            Membership.Status.ACTIVE
            if expires_at is None or expires_at > timezone.now()
            else Membership.Status.EXPIRED
        ),
        expires_at=expires_at,
        imported_from=f"{SOURCE}:{kind}",
    )


# --- Adopting the Stripe subscriptions ------------------------------------------------


def adopt_stripe_subscriptions(
    *,
    readers: list[PendingPaidReader],
    report: SubstackReport,
    progress: Callable[[str, int, int], None] | None = None,
) -> None:
    """Mirror each paid reader's live Stripe subscriptions; comp-until-expiry otherwise.

    Stripe is read outside any lock, then each reader's memberships are written in one
    transaction, so a webhook for the same subscription arriving meanwhile converges
    with it (`sync_membership_from_stripe` keeps the newer state).
    """
    pacer = _Pacer(per_second=STRIPE_REQUESTS_PER_SECOND)
    products: dict[str, dict[str, Any]] = {}
    for done, reader in enumerate(readers, start=1):
        pacer.wait()
        customer = stripe_client.find_customer(reader.customer_id)
        subscriptions: list[dict[str, Any]] = []
        if customer is not None:
            pacer.wait()
            subscriptions = stripe_client.list_customer_subscriptions(reader.customer_id)
        report.stripe_lookups += 1
        observed_at = timezone.now()
        live = [s for s in subscriptions if s.get("status") in LIVE_STATUSES]
        with transaction.atomic():
            if Membership.objects.filter(
                subscriber_id=reader.subscriber_id, imported_from__startswith=SOURCE
            ).exists():
                continue
            if customer is None:
                report.customers_not_found.append(reader.customer_id)
            elif not live and subscriptions:
                report.subscriptions_canceled += 1
            adopted = 0
            for subscription in live:
                if _adopt(
                    subscription=subscription,
                    subscriber_id=reader.subscriber_id,
                    observed_at=observed_at,
                    products=products,
                    report=report,
                ):
                    adopted += 1
            if adopted:
                report.adopted += adopted
                report.memberships_created += adopted
            else:
                _granted_membership(
                    subscriber_id=reader.subscriber_id, kind="paid", expires_at=reader.expires_at
                ).save()
                report.comp_until_expiry += 1
                report.memberships_created += 1
        if progress is not None:
            progress("Stripe lookups", done, len(readers))


def _adopt(
    *,
    subscription: dict[str, Any],
    subscriber_id: int,
    observed_at: datetime,
    products: dict[str, dict[str, Any]],
    report: SubstackReport,
) -> bool:
    """Record one live subscription as the reader's Stripe membership, with a Plan for
    its price. False when its price cannot be a plan (not a monthly or yearly amount)."""
    subscription_id = str(subscription["id"])
    plan = plan_for_price(subscription) or _imported_plan(
        subscription=subscription, products=products, report=report
    )
    if plan is None:
        return False
    lock_stripe_object(subscription_id)
    known = Membership.objects.filter(stripe_subscription_id=subscription_id).first()
    if known is not None and known.subscriber_id != subscriber_id:
        return False  # someone else's already; a webhook made it
    subscriber = Subscriber.objects.get(pk=subscriber_id)
    membership = sync_membership_from_stripe(
        subscription=subscription, subscriber=subscriber, observed_at=observed_at
    )
    if membership is None:
        return False
    Membership.objects.filter(pk=membership.pk).update(imported_from=f"{SOURCE}:paid")
    return True


def _imported_plan(
    *, subscription: dict[str, Any], products: dict[str, dict[str, Any]], report: SubstackReport
) -> Plan | None:
    price_id = subscription_price_id(subscription)
    items = (subscription.get("items") or {}).get("data", [])
    price = items[0].get("price") if items else None
    if not price_id or not isinstance(price, dict):
        return None
    recurring = price.get("recurring") or {}
    interval = recurring.get("interval")
    amount = price.get("unit_amount")
    if (
        interval not in Plan.Interval.values
        or (recurring.get("interval_count") or 1) != 1
        or not isinstance(amount, int)
        or amount <= 0
    ):
        return None
    product = price.get("product")
    product_id = str(product.get("id") if isinstance(product, dict) else product or "")
    if product_id and product_id not in products:
        products[product_id] = (
            product if isinstance(product, dict) else stripe_client.retrieve_product(product_id)
        )
    name = str((products.get(product_id) or {}).get("name") or "Imported plan")
    plan, created = Plan.objects.get_or_create(
        stripe_price_id=price_id,
        defaults={
            "name": f"{name} ({amount / 100:.2f} {str(price.get('currency', 'usd')).upper()}"
            f" a {interval})"[:200],
            "interval": interval,
            "amount": amount,
            "currency": str(price.get("currency") or "usd")[:3].lower(),
            "stripe_product_id": product_id[:100],
            "active": False,
            "imported_from": SOURCE,
        },
    )
    if created:
        report.plans_created.append(f"{plan.name} ({price_id})")
    return plan


# --- Checking the result --------------------------------------------------------------


def import_status_lines(*, now: datetime | None = None) -> list[str]:
    """What the Substack import left: readers, paid readers, adopted and granted ones."""
    now = now or timezone.now()
    readers = Subscriber.objects.filter(imported_from=SOURCE)
    by_status = dict(
        readers.values_list("status").annotate(n=Count("pk")).values_list("status", "n")
    )
    imported = Membership.objects.filter(imported_from__startswith=SOURCE)
    adopted = imported.filter(kind=Membership.Kind.STRIPE)
    adopted_by_status = dict(
        adopted.values_list("status").annotate(n=Count("pk")).values_list("status", "n")
    )
    granted = imported.filter(
        kind__in=[Membership.Kind.COMP, Membership.Kind.GIFT],
        status=Membership.Status.ACTIVE,
    ).filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
    span = granted.aggregate(first=Min("expires_at"), last=Max("expires_at"))
    lines = [
        f"Readers imported from Substack: {readers.count()}",
        *(f"  {status}: {count}" for status, count in sorted(by_status.items())),
        f"Paid now: {paid_subscribers(now=now).filter(imported_from=SOURCE).count()}",
        f"Adopted Stripe memberships: {adopted.count()}",
        *(f"  {status}: {count}" for status, count in sorted(adopted_by_status.items())),
        f"  on a price no plan knows (no access): {adopted.filter(foreign_price=True).count()}",
        f"Comp and gift memberships running: {granted.count()}",
    ]
    if span["first"]:
        lines.append(f"  expiring from {span['first']:%Y-%m-%d} to {span['last']:%Y-%m-%d}")
    return lines
