"""Telegram distribution: each published article posted to the channel once.

`queue_telegram_post` runs inside `publish_article`'s transaction: it creates the
article's `TelegramPost` (unique per article and chat) and queues the task on commit.
The task calls `send_telegram_post`, which claims the row before calling the Bot API.

Once, deliberately at most once. The claim (pending -> sending) is committed before the
API call, and the message id is stored after it. If the worker dies between Telegram
accepting the post and the row being saved, the row stays "sending": nothing posts it
again automatically, because the Bot API cannot tell us whether the post went out and a
duplicate in a public channel is worse than a late one. The admin shows such a post as
"stuck" after `STALE_CLAIM_AFTER`, and an editor who has checked the channel may repost
it. The one other unknown is a call that times out after Telegram received it; it is
retried, as a timeout almost always means Telegram never answered at all.

Paid content never reaches the channel: the post is built from what anyone may read
(`content.free_body`: the part before `<hr class="paywall">`, nothing at all for a paid
article without the marker), plus "Subscribe to read".
"""

from __future__ import annotations

import html
import ipaddress
import os
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

from django.conf import settings
from django.db import transaction
from django.db.models import F, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from config import queue
from newsletter import telegram
from newsletter.models import Article, TelegramPost
from newsletter.services.content import free_body
from publication.models import Publication

# Opening lines of the article shown under the title (visible characters).
EXCERPT_LENGTH = 600
# A cut excerpt shorter than this says nothing; it is left out instead.
MIN_EXCERPT_LENGTH = 40
ELLIPSIS = "\u2026"
# Retries of 5xx and timeouts back off from BACKOFF_BASE seconds up to BACKOFF_MAX.
BACKOFF_BASE = 10
BACKOFF_MAX = 600
# A claim older than this belongs to a worker that died (calls time out far sooner);
# a post pending this long after it was due (`retry_at`, or when it was queued) lost its
# task, and is queued again.
STALE_CLAIM_AFTER = timedelta(minutes=10)

# sendPhoto refusals that are about the photo itself: post as text instead.
_PHOTO_REFUSALS = (
    "wrong file identifier",
    "wrong remote file identifier",
    "failed to get http url content",
    "wrong type of the web page content",
    "image_process_failed",
    "photo_invalid_dimensions",
    "photo_save_file_invalid",
    "there is no photo",
    "too big",  # over 10 MB uploaded, 5 MB by URL
    "request entity too large",
)


class TelegramPostingError(Exception):
    """An editor's request cannot be done; the message says why, in the editor's words."""


class RetryLater(Exception):
    """The Bot API asked us to come back later (429) or did not answer (5xx, timeout)."""

    def __init__(self, reason: str, *, countdown: int) -> None:
        super().__init__(reason)
        self.countdown = countdown


# --- What the post says ------------------------------------------------------------------


@dataclass
class _Block:
    """One paragraph of the post: plain text, wrapped in one HTML tag when sent."""

    text: str
    tag: str = ""  # "b", "i" or "a"
    href: str = ""
    shrink_order: int = 0  # 0: never cut; otherwise cut in this order (1 first)

    def html(self) -> str:
        text = html.escape(self.text, quote=True)
        if self.tag == "a":
            return f'<a href="{html.escape(self.href, quote=True)}">{text}</a>'
        if self.tag:
            return f"<{self.tag}>{text}</{self.tag}>"
        return text


_SEPARATOR = "\n\n"


def visible_length(text: str) -> int:
    """Length as Telegram counts it: UTF-16 code units of the text readers see."""
    return len(text.encode("utf-16-le")) // 2


def truncate_at_word(text: str, *, limit: int) -> str:
    """Cut `text` to at most `limit` visible characters at a word boundary, with an ellipsis."""
    if visible_length(text) <= limit:
        return text
    if limit < 1:
        return ""
    room = limit - visible_length(ELLIPSIS)
    cut, used = [], 0
    for char in text:
        used += visible_length(char)
        if used > room:
            break
        cut.append(char)
    kept = "".join(cut)
    next_char = text[len(kept)] if len(kept) < len(text) else " "
    if not next_char.isspace():
        # Mid-word: go back to the last space, unless the text is one long word.
        boundary = max(kept.rfind(" "), kept.rfind("\n"))
        if boundary > 0:
            kept = kept[:boundary]
    kept = kept.rstrip(" \n\t,;:-\u2013\u2014")
    return kept + ELLIPSIS if kept else ""


class _TextExtractor(HTMLParser):
    """Article HTML to plain paragraphs; figures, images and code blocks are skipped."""

    _BLOCKS = {"p", "h2", "h3", "h4", "li", "blockquote", "tr", "div"}
    _SKIPPED = {"figure", "figcaption", "pre", "table", "script", "style"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.paragraphs: list[str] = []
        self._current: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIPPED:
            self._skipping += 1
        elif tag in self._BLOCKS:
            self._flush()
        elif tag == "br":
            self._current.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIPPED:
            self._skipping = max(0, self._skipping - 1)
        elif tag in self._BLOCKS:
            self._flush()

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self._current.append(data)

    def _flush(self) -> None:
        text = "".join(self._current)
        self._current = []
        lines = [re.sub(r"[ \t\r\f\v]+", " ", line).strip() for line in text.split("\n")]
        paragraph = "\n".join(line for line in lines if line)
        if paragraph:
            self.paragraphs.append(paragraph)

    def close(self) -> None:
        super().close()
        self._flush()


def html_to_text(*, html_text: str) -> str:
    """Plain text of an HTML fragment, one blank line between paragraphs."""
    extractor = _TextExtractor()
    extractor.feed(html_text)
    extractor.close()
    return _SEPARATOR.join(extractor.paragraphs)


def article_url(*, article: Article) -> str:
    return f"{settings.SITE_URL}{article.get_absolute_url()}"


def render_telegram_post(*, article: Article, limit: int) -> str:
    """The post in Telegram's HTML parse mode, at most `limit` visible characters.

    Title in bold, subtitle in italics, the opening lines of the free part, and a link
    to the article. Only the excerpt, then the subtitle, then the title are ever cut,
    as plain text before escaping, so a cut never lands inside an entity or a tag.
    """
    excerpt = truncate_at_word(
        html_to_text(html_text=free_body(article=article)), limit=EXCERPT_LENGTH
    )
    if article.visibility == Article.Visibility.PUBLIC:
        call_to_action = "Read the full article"
    else:
        call_to_action = "Subscribe to read"
    blocks = [
        _Block(article.title.strip(), tag="b", shrink_order=3),
        _Block(article.subtitle.strip(), tag="i", shrink_order=2),
        _Block(excerpt, shrink_order=1),
        _Block(call_to_action, tag="a", href=article_url(article=article)),
    ]
    blocks = [block for block in blocks if block.text]
    while (overflow := _length(blocks) - limit) > 0:
        shrinkable = [block for block in blocks if block.shrink_order]
        if not shrinkable:
            break
        block = min(shrinkable, key=lambda b: b.shrink_order)
        minimum = MIN_EXCERPT_LENGTH if block.shrink_order == 1 else 1
        target = visible_length(block.text) - overflow
        block.text = truncate_at_word(block.text, limit=target) if target >= minimum else ""
        if not block.text:
            blocks.remove(block)
    return _SEPARATOR.join(block.html() for block in blocks)


def _length(blocks: list[_Block]) -> int:
    return sum(visible_length(block.text) for block in blocks) + visible_length(_SEPARATOR) * (
        len(blocks) - 1
    )


def _host_is_public(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    if not host or "." not in host or host.endswith((".localhost", ".local", ".internal")):
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return True
    return address.is_global


def cover_photo(*, article: Article) -> telegram.Photo | None:
    """The article's cover for sendPhoto, or None to post text.

    Telegram fetches a photo given by URL from its own servers, so the URL must be
    public: a cover on a public SITE_URL (or object storage) is sent as its absolute
    URL; otherwise (a local or private SITE_URL) the file itself is uploaded.
    """
    if not article.cover_image:
        return None
    url = urljoin(f"{settings.SITE_URL}/", article.cover_image.url)
    if _host_is_public(url):
        return telegram.Photo(url=url)
    try:
        with article.cover_image.open("rb") as cover:
            content = cover.read()
    except OSError:
        return None  # the file is gone: a text post beats no post
    filename = os.path.basename(article.cover_image.name or "") or "cover.jpg"
    return telegram.Photo(content=content, filename=filename)


# --- Posting once ---------------------------------------------------------------------------


def queue_telegram_post(*, article: Article) -> TelegramPost | None:
    """Create the article's TelegramPost and queue its posting when the transaction commits.

    Returns None when the article is not to be posted ("post to Telegram" off) or
    Telegram is not configured.
    """
    if not article.post_to_telegram or not telegram.is_configured():
        return None
    post, _created = TelegramPost.objects.get_or_create(
        article=article, chat_id=telegram.configured_chat_id()
    )
    if post.status == TelegramPost.Status.PENDING:
        _queue_sending(post)
    return post


def _queue_sending(post: TelegramPost) -> None:
    _queue_sending_by_id(post.pk)


POST_ARTICLE_TO_TELEGRAM = queue.task_name("newsletter.tasks.post_article_to_telegram")
UPDATE_TELEGRAM_POST = queue.task_name("newsletter.tasks.update_telegram_post")


def _queue_sending_by_id(post_id: int) -> None:
    transaction.on_commit(lambda: queue.enqueue(POST_ARTICLE_TO_TELEGRAM, post_id))


def send_telegram_post(*, telegram_post_id: int, last_attempt: bool = False) -> TelegramPost | None:
    """Post the article once. Returns None when another run has it or it is already posted.

    Raises RetryLater for a 429, a 5xx or a timeout, unless `last_attempt`, when the
    post is marked failed instead.
    """
    claimed = TelegramPost.objects.filter(
        pk=telegram_post_id, status=TelegramPost.Status.PENDING, message_id__isnull=True
    ).update(
        status=TelegramPost.Status.SENDING,
        claimed_at=timezone.now(),
        attempts=F("attempts") + 1,
        updated_at=timezone.now(),
    )
    if not claimed:
        return None
    post = TelegramPost.objects.select_related("article").get(pk=telegram_post_id)
    article = post.article
    if article.status != Article.Status.PUBLISHED:
        return _fail(post, "Not posted: the article is not published.")
    try:
        message, kind = _send(post=post, article=article)
    except telegram.TelegramRetryAfter as exc:
        return _release_or_fail(post, exc, countdown=exc.retry_after, last_attempt=last_attempt)
    except telegram.TelegramTransientError as exc:
        countdown = min(BACKOFF_BASE * 2 ** (post.attempts - 1), BACKOFF_MAX)
        return _release_or_fail(post, exc, countdown=countdown, last_attempt=last_attempt)
    except telegram.TelegramPermanentError as exc:
        return _fail(post, exc.description)
    post.status = TelegramPost.Status.SENT
    post.message_id = int(message["message_id"])
    post.kind = kind
    post.posted_at = timezone.now()
    post.last_error = ""
    post.save(
        update_fields=["status", "message_id", "kind", "posted_at", "last_error", "updated_at"]
    )
    return post


def _send(*, post: TelegramPost, article: Article) -> tuple[dict, str]:
    photo = cover_photo(article=article)
    if photo is not None:
        caption = render_telegram_post(article=article, limit=telegram.CAPTION_LIMIT)
        try:
            message = telegram.send_photo(chat_id=post.chat_id, photo=photo, caption=caption)
            return message, TelegramPost.Kind.PHOTO
        except telegram.TelegramPermanentError as exc:
            if not any(refusal in exc.description.lower() for refusal in _PHOTO_REFUSALS):
                raise
    text = render_telegram_post(article=article, limit=telegram.MESSAGE_LIMIT)
    return telegram.send_message(chat_id=post.chat_id, text=text), TelegramPost.Kind.TEXT


def _release_or_fail(
    post: TelegramPost, exc: telegram.TelegramError, *, countdown: int, last_attempt: bool
) -> TelegramPost:
    if last_attempt:
        return _fail(post, f"Gave up after {post.attempts} attempts: {exc.description}")
    countdown = max(1, countdown)
    post.status = TelegramPost.Status.PENDING
    post.claimed_at = None
    post.retry_at = timezone.now() + timedelta(seconds=countdown)
    post.last_error = exc.description
    post.save(update_fields=["status", "claimed_at", "retry_at", "last_error", "updated_at"])
    raise RetryLater(exc.description, countdown=countdown)


def _fail(post: TelegramPost, error: str) -> TelegramPost:
    post.status = TelegramPost.Status.FAILED
    post.claimed_at = None
    post.last_error = error
    post.save(update_fields=["status", "claimed_at", "last_error", "updated_at"])
    return post


def requeue_stalled_telegram_posts(*, now: datetime | None = None) -> int:
    """Queue again the posts left pending well past the time they were due (a lost task).

    Safe because of the claim: if the original task turns up too, one of them posts.
    A post waiting out a 429's retry_after is not due yet, however long Telegram asked
    for. Posts left "sending" are not touched: they may already be in the channel.
    """
    now = now or timezone.now()
    stalled = TelegramPost.objects.alias(due_at=Coalesce("retry_at", "updated_at")).filter(
        status=TelegramPost.Status.PENDING,
        message_id__isnull=True,
        due_at__lt=now - STALE_CLAIM_AFTER,
    )
    post_ids = list(stalled.values_list("pk", flat=True)[:500])
    TelegramPost.objects.filter(pk__in=post_ids).update(updated_at=now, retry_at=None)
    for post_id in post_ids:
        _queue_sending_by_id(post_id)
    return len(post_ids)


def is_stuck(*, telegram_post: TelegramPost) -> bool:
    """Sending, but its worker died (it may or may not be in the channel); or pending
    and its task lost."""
    stale = timezone.now() - STALE_CLAIM_AFTER
    if telegram_post.status == TelegramPost.Status.SENDING:
        return telegram_post.claimed_at is not None and telegram_post.claimed_at < stale
    if telegram_post.status == TelegramPost.Status.PENDING:
        due_at = telegram_post.retry_at or telegram_post.updated_at
        return due_at is not None and due_at < stale
    return False


# --- What editors can do ------------------------------------------------------------------


def _require_configured() -> None:
    if not telegram.is_configured():
        raise TelegramPostingError(
            "Telegram posting is off: set TELEGRAM_BOT_TOKEN and TELEGRAM_CHAT_ID."
        )


def repost_to_telegram(*, article: Article) -> TelegramPost:
    """Post again after a failure (or a stuck claim), or post an article never posted."""
    _require_configured()
    with transaction.atomic():
        article = Article.objects.select_for_update().get(pk=article.pk)
        if article.status != Article.Status.PUBLISHED:
            raise TelegramPostingError(f"“{article.title}” is not published.")
        post, created = TelegramPost.objects.select_for_update().get_or_create(
            article=article, chat_id=telegram.configured_chat_id()
        )
        if not created:
            if post.status == TelegramPost.Status.SENT:
                raise TelegramPostingError(
                    f"“{article.title}” is already posted; use “update the post” to change it."
                )
            if post.status in (TelegramPost.Status.PENDING, TelegramPost.Status.SENDING) and (
                not is_stuck(telegram_post=post)
            ):
                raise TelegramPostingError(f"“{article.title}” is already on its way.")
            post.status = TelegramPost.Status.PENDING
            post.claimed_at = None
            post.retry_at = None
            post.attempts = 0
            post.last_error = ""
            post.save(
                update_fields=[
                    "status",
                    "claimed_at",
                    "retry_at",
                    "attempts",
                    "last_error",
                    "updated_at",
                ]
            )
        _queue_sending(post)
    return post


def request_telegram_update(*, article: Article) -> TelegramPost:
    """Queue an edit of the article's post to match its current title and teaser."""
    _require_configured()
    post = TelegramPost.objects.filter(
        article=article, chat_id=telegram.configured_chat_id(), status=TelegramPost.Status.SENT
    ).first()
    if post is None:
        raise TelegramPostingError(f"“{article.title}” has no Telegram post to update.")
    post_id = post.pk
    transaction.on_commit(lambda: queue.enqueue(UPDATE_TELEGRAM_POST, post_id))
    return post


def update_telegram_post(*, telegram_post_id: int, last_attempt: bool = False) -> TelegramPost:
    """Edit the posted message (caption or text) to what the article says now."""
    post = TelegramPost.objects.select_related("article").get(pk=telegram_post_id)
    if post.message_id is None:
        raise TelegramPostingError("This article has not been posted to Telegram yet.")
    article = post.article
    try:
        if post.kind == TelegramPost.Kind.PHOTO:
            caption = render_telegram_post(article=article, limit=telegram.CAPTION_LIMIT)
            telegram.edit_message_caption(
                chat_id=post.chat_id, message_id=post.message_id, caption=caption
            )
        else:
            text = render_telegram_post(article=article, limit=telegram.MESSAGE_LIMIT)
            telegram.edit_message_text(chat_id=post.chat_id, message_id=post.message_id, text=text)
    except (telegram.TelegramRetryAfter, telegram.TelegramTransientError) as exc:
        if not last_attempt:
            countdown = getattr(exc, "retry_after", BACKOFF_BASE)
            raise RetryLater(exc.description, countdown=countdown) from exc
        return _update_failed(post, exc)
    except telegram.TelegramPermanentError as exc:
        return _update_failed(post, exc)
    post.edited_at = timezone.now()
    post.last_error = ""
    post.save(update_fields=["edited_at", "last_error", "updated_at"])
    return post


def _update_failed(post: TelegramPost, exc: telegram.TelegramError) -> TelegramPost:
    post.last_error = f"Update failed: {exc.description}"
    post.save(update_fields=["last_error", "updated_at"])
    return post


# --- Where the post is -------------------------------------------------------------------

_T_ME = re.compile(r"^https?://(?:t\.me|telegram\.me)/(?:s/)?([A-Za-z][A-Za-z0-9_]{3,})/?$")


def telegram_message_url(*, telegram_post: TelegramPost, channel_url: str | None = None) -> str:
    """A t.me link to the posted message, or "" when the chat has no linkable address.

    A channel given as @username links publicly; a numeric channel id (-100...) links
    through the publication's channel link (`channel_url`, read from the publication
    when not given) when it is a public t.me/<username>, else through t.me/c/, which
    opens for members of a private channel.
    """
    if telegram_post.message_id is None:
        return ""
    chat_id, message_id = telegram_post.chat_id, telegram_post.message_id
    if chat_id.startswith("@"):
        return f"https://t.me/{chat_id[1:]}/{message_id}"
    if channel_url is None:
        channel_url = Publication.load().telegram_channel_url
    match = _T_ME.match(channel_url or "")
    if match and match.group(1).lower() not in {"joinchat", "addlist", "share"}:
        return f"https://t.me/{match.group(1)}/{message_id}"
    if chat_id.startswith("-100"):
        return f"https://t.me/c/{chat_id[4:]}/{message_id}"
    return ""


def with_channel_url(posts: QuerySet[TelegramPost]) -> QuerySet[TelegramPost]:
    """Posts annotated with the publication's channel link (`channel_url`), so that a
    list of them links every message without a query per row."""
    # The publication is the row Publication.load() keeps at pk=1.
    channel_url = Publication.objects.filter(pk=1).values("telegram_channel_url")[:1]
    return posts.annotate(channel_url=Coalesce(Subquery(channel_url), Value("")))
