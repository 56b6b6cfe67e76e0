"""A post's HTML made into an article body: paywall, footnotes, embeds, pictures."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from html import escape as html_escape
from urllib.parse import urlsplit

from newsletter.services.content import (
    EMBED_SRC_RE,
    PAYWALL_MARKER,
    MarkupRewriter,
    footnote_id,
    footnote_ref_id,
    sanitize_body,
)
from substack.services.media_download import (
    MediaDownloadError,
    download_image,
    stored_image_url,
)
from substack.services.report import (
    SubstackReport,
)

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


class _SubstackRewriter(MarkupRewriter):
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
        super().__init__()
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

    def handle_comment(self, data: str) -> None:
        pass  # comments carry nothing a reader sees (and nh3 drops them anyway)

    def handle_decl(self, decl: str) -> None:
        pass

    def result(self) -> str:
        self.close()
        return "".join(self.out + self.held)


MEDIA_FOLDER = "substack"


class _ImageLocaliser(MarkupRewriter):
    """Re-emits a sanitised body with each picture pointing at its local copy.

    `copy(url)` returns the local URL or raises MediaDownloadError (the original
    address is then kept). A link wrapped around a picture that pointed at the same
    host (Substack links each image to its full-size version there) follows it.
    """

    def __init__(self, *, copy: Callable[[str], str | None]) -> None:
        super().__init__()
        self.copy = copy
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
