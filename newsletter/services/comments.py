"""Comments: who may write them, writing, editing and moderating them, and reading threads.

Every state change of a comment goes through a function here: the views, the admin and
the digest task call them. Bodies are stored as the plain text the reader typed and
turned into HTML only when shown (`render_comment_body`), so no markup a reader sends
ever reaches a page.
"""

from __future__ import annotations

import enum
import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import nh3
from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.db.models import Count, Exists, IntegerField, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.template.loader import render_to_string
from django.utils import timezone
from django.utils.html import linebreaks, urlize
from django.utils.safestring import SafeString, mark_safe

from newsletter.models import COMMENT_MAX_LENGTH, Article, Comment, CommentBan
from newsletter.services.access import can_read_full_article
from newsletter.services.page_cache import invalidate_pages, shared_fragment
from newsletter.services.page_parameters import Order, parse_page_number  # noqa: F401
from publication.emails import transactional_message
from publication.models import Publication
from subscriptions.services.access import founding_member_user_ids, user_is_paid

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, User

    from newsletter.models import Author

MAX_LENGTH = COMMENT_MAX_LENGTH
# A reader may fix a typo or take a comment back for this long after posting it.
EDIT_WINDOW = timedelta(minutes=15)
# Per reader: at most RATE_LIMIT_COUNT new comments in any RATE_LIMIT_WINDOW.
RATE_LIMIT_COUNT = 5
RATE_LIMIT_WINDOW = timedelta(minutes=5)
# The digest only looks this far back, so switching it on does not mail old threads.
DIGEST_LOOKBACK = timedelta(days=2)
# Top-level comments per page of a thread (each comes with all its replies).
THREAD_PAGE_SIZE = 50
DISPLAY_NAME_MAX_LENGTH = 60
FALLBACK_DISPLAY_NAME = "A reader"
LINK_REL = "nofollow ugc noopener"
# The shared fragment of who is banned from commenting (`banned_user_ids`).
BANS_FRAGMENT = "comment-bans"

logger = logging.getLogger(__name__)


class CommentError(Exception):
    """The comment cannot be written, changed or removed as asked; the message says why."""


class CommentNotAllowed(CommentError):
    pass


class CommentRateLimited(CommentError):
    pass


class EditWindowClosed(CommentError):
    pass


class CommentAccess(enum.Enum):
    """Whether a reader may comment on an article, and if not, what to offer them."""

    ALLOWED = "allowed"
    SIGN_IN = "sign_in"  # anonymous: sign in or subscribe
    UPGRADE = "upgrade"  # signed in, but the policy or the article needs a paid plan
    BANNED = "banned"
    CLOSED = "closed"  # comments switched off, or the article is not published


# --- Who may comment --------------------------------------------------------------------


def comment_access(
    *,
    user: AbstractBaseUser | AnonymousUser | None,
    article: Article,
    publication: Publication | None = None,
) -> CommentAccess:
    if not article.is_published or not article.comments_enabled:
        return CommentAccess.CLOSED
    if user is None or not user.is_authenticated:
        return CommentAccess.SIGN_IN
    if user.pk in banned_user_ids():
        return CommentAccess.BANNED
    if getattr(user, "is_staff", False):
        return CommentAccess.ALLOWED
    publication = publication or Publication.load()
    if publication.comment_policy == Publication.CommentPolicy.PAID:
        return CommentAccess.ALLOWED if user_is_paid(user=user) else CommentAccess.UPGRADE
    # Readers who cannot read the whole article do not join its discussion.
    if not can_read_full_article(user=user, article=article):
        return CommentAccess.UPGRADE
    return CommentAccess.ALLOWED


def banned_user_ids() -> frozenset[Any]:
    """Who may not comment, read once per generation of the page cache (every ban made
    or lifted starts a new one, `newsletter.signals`): a page need not ask per reader."""
    return shared_fragment(
        BANS_FRAGMENT, lambda: frozenset(CommentBan.objects.values_list("user_id", flat=True))
    )


def _require_access(*, user: AbstractBaseUser, article: Article) -> None:
    # A write asks the database itself, not the shared copy pages read.
    if CommentBan.objects.filter(user_id=user.pk).exists():
        raise CommentNotAllowed("You can no longer comment on this publication.")
    access = comment_access(user=user, article=article)
    if access is CommentAccess.ALLOWED:
        return
    messages = {
        CommentAccess.SIGN_IN: "Sign in to comment.",
        CommentAccess.UPGRADE: "Comments here are for paid subscribers. Upgrade to join in.",
        CommentAccess.BANNED: "You can no longer comment on this publication.",
        CommentAccess.CLOSED: "Comments are closed on this article.",
    }
    raise CommentNotAllowed(messages[access])


def _take_rate_limit_slot(*, user: AbstractBaseUser) -> None:
    """A counter per reader in the shared cache (Redis in production).

    The window opens with the reader's first comment and the counter expires with it;
    incrementing keeps the expiry, so a burst is cut off and a pause lets them go on.
    """
    key = f"comments:rate:{user.pk}"
    timeout = int(RATE_LIMIT_WINDOW.total_seconds())
    cache.add(key, 0, timeout=timeout)
    try:
        count = cache.incr(key)
    except ValueError:  # the window closed between add and incr
        cache.set(key, 1, timeout=timeout)
        count = 1
    if count > RATE_LIMIT_COUNT:
        minutes = timeout // 60
        raise CommentRateLimited(
            f"You are commenting too fast: at most {RATE_LIMIT_COUNT} comments in "
            f"{minutes} minutes. Please wait a little and try again."
        )


def clean_body(*, body: str) -> str:
    body = body.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "").strip()
    if not body:
        raise CommentError("Write something before posting.")
    if len(body) > MAX_LENGTH:
        raise CommentError(
            f"Comments can be at most {MAX_LENGTH} characters long (this one is {len(body)})."
        )
    return body


# --- Writing, editing, deleting ----------------------------------------------------------


def post_comment(
    *,
    user: User,
    article: Article,
    body: str,
    parent_id: int | None = None,
) -> Comment:
    """Post a comment, or a reply when `parent_id` is given.

    Threads are one level deep: a reply to a reply joins the thread of the top-level
    comment it answers.
    """
    body = clean_body(body=body)
    _require_access(user=user, article=article)
    parent = None
    if parent_id is not None:
        parent = (
            Comment.objects.filter(pk=parent_id, article=article)
            .only("pk", "parent_id", "status")
            .first()
        )
        if parent is None or parent.status != Comment.Status.VISIBLE:
            raise CommentError("The comment you are replying to is no longer there.")
        if parent.parent_id is not None:
            parent = Comment.objects.filter(pk=parent.parent_id).only("pk", "status").first()
            if parent is None or parent.status == Comment.Status.HIDDEN:
                raise CommentError("The comment you are replying to is no longer there.")
    _take_rate_limit_slot(user=user)
    return Comment.objects.create(
        article=article,
        user=user,
        parent=parent,
        body=body,
        is_editor_reply=bool(getattr(user, "is_staff", False)),
    )


def can_change(*, user: AbstractBaseUser | AnonymousUser | None, comment: Comment) -> bool:
    """Whether this reader may still edit or delete this comment (their own, recently)."""
    return (
        user is not None
        and user.is_authenticated
        and comment.user_id == user.pk
        and comment.status == Comment.Status.VISIBLE
        and timezone.now() - comment.created_at <= EDIT_WINDOW
    )


def _require_change(*, user: AbstractBaseUser, comment: Comment) -> None:
    if comment.user_id != user.pk:
        raise CommentNotAllowed("You can only change your own comments.")
    if comment.status != Comment.Status.VISIBLE:
        raise CommentNotAllowed("This comment can no longer be changed.")
    if timezone.now() - comment.created_at > EDIT_WINDOW:
        minutes = int(EDIT_WINDOW.total_seconds() // 60)
        raise EditWindowClosed(
            f"Comments can be changed for {minutes} minutes after posting; "
            "this one can no longer be changed."
        )
    if CommentBan.objects.filter(user_id=user.pk).exists():
        raise CommentNotAllowed("You can no longer comment on this publication.")


def edit_comment(*, user: User, comment: Comment, body: str) -> Comment:
    body = clean_body(body=body)
    _require_change(user=user, comment=comment)
    comment.body = body
    comment.edited_at = timezone.now()
    comment.save(update_fields=["body", "edited_at"])
    return comment


def delete_comment(*, user: User, comment: Comment) -> None:
    """The writer takes their comment back.

    A comment that has replies leaves a "deleted" placeholder so the replies keep
    their context; one without replies disappears.
    """
    _require_change(user=user, comment=comment)
    with transaction.atomic():
        if comment.replies.exists():
            comment.status = Comment.Status.DELETED
            comment.body = ""
            comment.save(update_fields=["status", "body"])
        else:
            comment.delete()


def erase_comments_of(*, user: AbstractBaseUser) -> None:
    """Erase what a reader wrote, when their account is deleted.

    A comment others replied to stays as an anonymous "deleted" placeholder, so their
    replies are kept in context; every other comment of theirs is deleted.
    """
    theirs = Comment.objects.filter(user_id=user.pk)
    with transaction.atomic():
        others_replies = Comment.objects.filter(parent=OuterRef("pk")).exclude(user_id=user.pk)
        theirs.filter(Exists(others_replies)).update(
            status=Comment.Status.DELETED, body="", user=None
        )
        theirs.delete()
    invalidate_pages()


# --- Moderation ---------------------------------------------------------------------------


def hide_comments(*, comments: QuerySet[Comment]) -> int:
    hidden = comments.filter(status=Comment.Status.VISIBLE).update(status=Comment.Status.HIDDEN)
    invalidate_pages()
    return hidden


def unhide_comments(*, comments: QuerySet[Comment]) -> int:
    shown = comments.filter(status=Comment.Status.HIDDEN).update(status=Comment.Status.VISIBLE)
    invalidate_pages()
    return shown


def ban_commenter(
    *,
    user: AbstractBaseUser,
    banned_by: AbstractBaseUser | None = None,
    reason: str = "",
    hide_their_comments: bool = False,
) -> CommentBan:
    """Stop a reader from commenting; optionally hide everything they wrote."""
    with transaction.atomic():
        ban, _ = CommentBan.objects.get_or_create(
            user_id=user.pk,
            defaults={"banned_by_id": getattr(banned_by, "pk", None), "reason": reason},
        )
        if hide_their_comments:
            hide_comments(comments=Comment.objects.filter(user_id=user.pk))
    return ban


def lift_comment_ban(*, user: AbstractBaseUser) -> bool:
    deleted, _ = CommentBan.objects.filter(user_id=user.pk).delete()
    return deleted > 0


# --- Display names ------------------------------------------------------------------------


def clean_display_name(*, name: str) -> str:
    name = " ".join(name.split())
    if len(name) > DISPLAY_NAME_MAX_LENGTH:
        raise CommentError(f"Names can be at most {DISPLAY_NAME_MAX_LENGTH} characters long.")
    return name


def set_display_name(*, user: User, name: str) -> None:
    """The name shown with a reader's comments, kept on `User.first_name`.

    Their comments show it on every page at once: saving the name renews the pages
    (`renew_pages_showing_user`, on every save of a User, the admin's too).
    """
    name = clean_display_name(name=name)
    user.first_name = name
    user.save(update_fields=["first_name"])


# What a user's comments show of them (`display_name`).
_SHOWN_FIELDS = frozenset({"first_name", "last_name", "is_staff"})


def renew_pages_showing_user(
    *, user: Any, created: bool, update_fields: Iterable[str] | None
) -> None:
    """A saved user (newsletter.signals): the shared discussions and the signed-in
    readers' page shells that show their name start a new generation, unless the save
    could not have changed what they show (a new user has no comments; a sign-in only
    saves `last_login`)."""
    if created or (update_fields is not None and not _SHOWN_FIELDS & set(update_fields)):
        return
    invalidate_pages()


def display_name(*, user: Any) -> str:
    """Editors appear under their author name; readers under the name they chose."""
    if user is None:
        return FALLBACK_DISPLAY_NAME
    if getattr(user, "is_staff", False):
        author: Author | None = getattr(user, "author", None)
        if author is not None and author.display_name:
            return author.display_name
    return user.first_name.strip() or user.get_full_name().strip() or FALLBACK_DISPLAY_NAME


# --- Reading ------------------------------------------------------------------------------


def render_comment_body(*, body: str) -> SafeString:
    """Plain text to HTML: everything escaped, links made clickable, paragraphs kept."""
    linked = urlize(body, trim_url_limit=60, nofollow=False, autoescape=True)
    html = linebreaks(linked, autoescape=False)
    # A second, independent line of defence: only <p>, <br> and <a href> survive, and
    # every link is marked as user-generated.
    cleaned = nh3.clean(
        html,
        tags={"p", "br", "a"},
        attributes={"a": {"href"}},
        url_schemes={"http", "https", "mailto"},
        link_rel=LINK_REL,
    )
    return mark_safe(cleaned)  # noqa: S308 - produced by nh3 from escaped text


def visible_comment_count_subquery() -> Coalesce:
    counts = (
        Comment.objects.filter(article=OuterRef("pk"), status=Comment.Status.VISIBLE)
        .order_by()
        .values("article")
        .annotate(n=Count("pk"))
        .values("n")
    )
    return Coalesce(Subquery(counts, output_field=IntegerField()), 0)


def with_comment_counts(queryset: QuerySet[Article]) -> QuerySet[Article]:
    """Annotate each article with `comment_count`: its visible comments, in one query."""
    return queryset.annotate(comment_count=visible_comment_count_subquery())


def thread_page_count(*, article: Article, user: AbstractBaseUser | AnonymousUser | None) -> int:
    """How many pages the discussion under an article has for this viewer (at least 1)."""
    threads = _shown_threads(article_id=article.pk, viewer_is_staff=_is_staff(user)).count()
    return max(1, -(-threads // THREAD_PAGE_SIZE))


@dataclass
class ThreadComment:
    comment: Comment
    author_name: str
    body_html: SafeString
    is_editor: bool
    is_own: bool
    can_change: bool
    is_placeholder: bool  # hidden or deleted, shown only to keep its replies in context
    is_founding: bool = False
    replies: list[ThreadComment] = field(default_factory=list)

    @property
    def pk(self) -> int:
        return self.comment.pk


@dataclass
class Thread:
    article: Article
    comments: list[ThreadComment]
    count: int
    access: CommentAccess
    order: Order
    viewer_is_staff: bool
    page: int = 1
    has_previous: bool = False
    has_more: bool = False
    max_length: int = MAX_LENGTH


def _thread_entry(
    *, comment: Comment, user: Any, now: datetime, viewer_is_staff: bool
) -> ThreadComment:
    visible = comment.status == Comment.Status.VISIBLE
    shown = visible or (viewer_is_staff and comment.status == Comment.Status.HIDDEN)
    is_own = bool(user is not None and user.is_authenticated and comment.user_id == user.pk)
    return ThreadComment(
        comment=comment,
        author_name=display_name(user=comment.user) if shown else "",
        body_html=render_comment_body(body=comment.body) if shown else SafeString(""),
        is_editor=comment.is_editor_reply,
        is_own=is_own,
        can_change=is_own and visible and now - comment.created_at <= EDIT_WINDOW,
        is_placeholder=not shown,
    )


def _is_staff(user: AbstractBaseUser | AnonymousUser | None) -> bool:
    return bool(user is not None and getattr(user, "is_staff", False))


def _shown_statuses(*, viewer_is_staff: bool) -> list[str]:
    if viewer_is_staff:
        return [Comment.Status.VISIBLE, Comment.Status.HIDDEN]
    return [Comment.Status.VISIBLE]


def _shown_threads(*, article_id: int, viewer_is_staff: bool) -> QuerySet[Comment]:
    """The article's top-level comments this viewer sees, or sees as placeholders."""
    shown_statuses = _shown_statuses(viewer_is_staff=viewer_is_staff)
    shown_replies = Comment.objects.filter(parent=OuterRef("pk"), status__in=shown_statuses)
    return Comment.objects.filter(article_id=article_id, parent__isnull=True).filter(
        Q(status__in=shown_statuses) | Q(Exists(shown_replies))
    )


def thread_page_of(*, comment: Comment, user: AbstractBaseUser | AnonymousUser | None) -> int:
    """The page of the discussion, oldest first, that shows this comment to this viewer."""
    top = Comment.objects.only("pk", "created_at").get(pk=comment.parent_id or comment.pk)
    earlier = _shown_threads(article_id=comment.article_id, viewer_is_staff=_is_staff(user)).filter(
        Q(created_at__lt=top.created_at) | Q(created_at=top.created_at, pk__lt=top.pk)
    )
    return earlier.count() // THREAD_PAGE_SIZE + 1


# What a thread shows of a commenter (`display_name`): the rows are shared by every
# reader through the cache (`shared_fragment`), so no password hash or address goes in.
_COMMENTER_FIELDS = (
    "user__id",
    "user__first_name",
    "user__last_name",
    "user__is_staff",
    "user__author__id",
    "user__author__user",
    "user__author__display_name",
)


def _with_commenters(comments: QuerySet[Comment]) -> QuerySet[Comment]:
    own = [field.name for field in Comment._meta.concrete_fields]
    return comments.select_related("user", "user__author").only(*own, *_COMMENTER_FIELDS)


@dataclass(frozen=True)
class _ThreadRows:
    count: int
    top_level: list[Comment]  # one more than a page: whether another page follows
    replies: list[Comment]


def _thread_rows(*, article_id: int, viewer_is_staff: bool, order: Order, page: int) -> _ThreadRows:
    shown_statuses = _shown_statuses(viewer_is_staff=viewer_is_staff)
    count = Comment.objects.filter(article_id=article_id, status=Comment.Status.VISIBLE).count()
    sort = ("created_at", "pk") if order is Order.OLDEST else ("-created_at", "-pk")
    offset = (page - 1) * THREAD_PAGE_SIZE
    top_level = list(
        _with_commenters(
            _shown_threads(article_id=article_id, viewer_is_staff=viewer_is_staff)
        ).order_by(*sort)[offset : offset + THREAD_PAGE_SIZE + 1]
    )
    replies = []
    if top_level:
        replies = list(
            _with_commenters(
                Comment.objects.filter(
                    parent_id__in=[c.pk for c in top_level[:THREAD_PAGE_SIZE]],
                    status__in=shown_statuses,
                )
            ).order_by("created_at", "pk")
        )
    return _ThreadRows(count=count, top_level=top_level, replies=replies)


def comment_thread(
    *,
    article: Article,
    user: AbstractBaseUser | AnonymousUser | None,
    order: Order = Order.OLDEST,
    page: int = 1,
    publication: Publication | None = None,
) -> Thread:
    """The discussion under an article as this reader sees it, in three queries.

    Readers see visible comments; a hidden or deleted comment that has visible replies
    stays as a placeholder. Staff also see hidden comments, marked. Top-level comments
    come THREAD_PAGE_SIZE at a time, each with all of its replies.
    """
    viewer_is_staff = _is_staff(user)
    # Far past any real discussion, and small enough for SQL's OFFSET (a bigint).
    page = min(max(page, 1), 10**9)

    def rows() -> _ThreadRows:
        return _thread_rows(
            article_id=article.pk, viewer_is_staff=viewer_is_staff, order=order, page=page
        )

    # Every reader but an editor sees the same comments: read once per generation of the
    # page cache (each comment saved, hidden or deleted starts a new one).
    shared = (
        rows()
        if viewer_is_staff
        else shared_fragment(f"thread:{article.pk}:{order.value}:{page}", rows)
    )
    top_level = shared.top_level[:THREAD_PAGE_SIZE]
    has_more = len(shared.top_level) > THREAD_PAGE_SIZE
    count = shared.count
    now = timezone.now()
    replies: dict[int, list[ThreadComment]] = defaultdict(list)
    for reply in shared.replies:
        replies[reply.parent_id].append(  # type: ignore[index]
            _thread_entry(comment=reply, user=user, now=now, viewer_is_staff=viewer_is_staff)
        )
    publication = publication or Publication.load()
    if publication.show_founding_badges:
        everyone = [e for group in replies.values() for e in group]
        user_ids = {c.user_id for c in top_level} | {e.comment.user_id for e in everyone}
        founding = founding_member_user_ids(user_ids={i for i in user_ids if i})
        for entry in everyone:
            entry.is_founding = entry.comment.user_id in founding and not entry.is_placeholder
    else:
        founding = set()
    entries = []
    for comment in top_level:
        entry = _thread_entry(comment=comment, user=user, now=now, viewer_is_staff=viewer_is_staff)
        entry.is_founding = comment.user_id in founding and not entry.is_placeholder
        entry.replies = replies.get(comment.pk, [])
        entries.append(entry)
    return Thread(
        article=article,
        comments=entries,
        count=count,
        access=comment_access(user=user, article=article, publication=publication),
        order=order,
        viewer_is_staff=viewer_is_staff,
        page=page,
        has_previous=page > 1,
        has_more=has_more,
    )


# --- Digest to authors --------------------------------------------------------------------


@dataclass
class _DigestArticle:
    article: Article
    comments: list[Comment]


def send_comment_digests(*, now: datetime | None = None) -> int:
    """Email each article's authors the comments posted since the last digest.

    Off unless the publication switches it on. Each comment is in at most one digest:
    the rows are locked while the digest is sent and marked in the same transaction,
    so two overlapping runs do not both mail them. An author whose address the mail
    server refuses misses this digest rather than making the others get it again every
    run; when no digest at all goes out (the server is down), nothing is marked and the
    next run tries again. Returns the number of emails sent.
    """
    publication = Publication.load()
    if not publication.comment_digest_enabled:
        return 0
    now = now or timezone.now()
    sent = 0
    with transaction.atomic():
        pending_ids = list(
            Comment.objects.select_for_update(skip_locked=True)
            .filter(
                authors_notified_at__isnull=True,
                status=Comment.Status.VISIBLE,
                created_at__gte=now - DIGEST_LOOKBACK,
                created_at__lte=now,
            )
            .values_list("pk", flat=True)
        )
        if not pending_ids:
            return 0
        comments = (
            Comment.objects.filter(pk__in=pending_ids)
            .select_related("user", "user__author", "article")
            .order_by("article_id", "created_at")
        )
        by_article: dict[int, _DigestArticle] = {}
        for comment in comments:
            entry = by_article.setdefault(
                comment.article_id, _DigestArticle(article=comment.article, comments=[])
            )
            entry.comments.append(comment)
        per_recipient: dict[int, tuple[Any, list[_DigestArticle]]] = {}
        articles = Article.objects.filter(pk__in=by_article).prefetch_related("authors__user")
        for article in articles:
            for author in article.authors.all():
                recipient = author.user
                if recipient is None or not recipient.email or not recipient.is_active:
                    continue
                theirs = [c for c in by_article[article.pk].comments if c.user_id != recipient.pk]
                if not theirs:
                    continue
                _, items = per_recipient.setdefault(recipient.pk, (recipient, []))
                items.append(_DigestArticle(article=article, comments=theirs))
        failed = 0
        for recipient, items in per_recipient.values():
            try:
                _send_digest(publication=publication, recipient=recipient, items=items)
            except Exception:  # SMTP and ESP backends each raise their own errors
                logger.exception("Comment digest to %s was not sent", recipient.email)
                failed += 1
            else:
                sent += 1
        if failed and not sent:
            transaction.set_rollback(True)
            return 0
        Comment.objects.filter(pk__in=pending_ids).update(authors_notified_at=now)
    return sent


def _send_digest(*, publication: Publication, recipient: Any, items: list[_DigestArticle]) -> None:
    total = sum(len(item.comments) for item in items)
    context = {
        "publication": publication,
        "site_url": settings.SITE_URL,
        "total": total,
        "items": [
            {
                "article": item.article,
                "url": f"{settings.SITE_URL}/p/{item.article.slug}/#comments",
                "comments": [
                    {
                        "author_name": display_name(user=c.user),
                        "is_editor": c.is_editor_reply,
                        "is_reply": c.parent_id is not None,
                        "created_at": c.created_at,
                        "body": c.body,
                        "url": f"{settings.SITE_URL}/p/{item.article.slug}/#comment-{c.pk}",
                    }
                    for c in item.comments
                ],
            }
            for item in items
        ],
    }
    subject = (
        f"{total} new comment{'s' if total != 1 else ''} on “{items[0].article.title}”"
        if len(items) == 1
        else f"{total} new comments on {len(items)} of your articles"
    )
    context["subject"] = subject
    message = transactional_message(
        to=recipient.email,
        subject=subject,
        text=render_to_string("comments/email/digest.txt", context),
        html=render_to_string("comments/email/digest.html", context),
        publication=publication,
    )
    message.send()
