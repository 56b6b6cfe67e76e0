"""A signed-in reader's article page from a shell that every reader in their position shares.

Rendering the page (the layout, the body, a discussion of fifty comments) costs far
more than everything else a signed-in request does, yet nearly all of it is the same
for every reader who sees the article the same way. So the page is rendered once per
generation of the page cache and *position*, and kept as a shell: the HTML with a
random marker where each reader's own values go. A position is everything else the
page shows that depends on the reader, decided for each request:

- whether they read the whole article (`full`), and whether they are paid (the
  header's and footer's upgrade links);
- what the discussion offers them (`CommentAccess`: the comment and reply forms, an
  upgrade or sign-in invitation, the banned notice);
- whether they chose a name (the form's "change your name" or "choose a name");
- which order and page of the discussion they asked for.

What is theirs alone is filled in for each request: the CSRF token of the comment
forms and the name they comment under. Everything else is rendered whole, as before,
and never stored: editors (they see hidden comments), a reader with a message waiting,
and a reader with a comment on the page they may still edit or delete (those links
are theirs alone; the shell keeps who wrote what, and when, to tell).

Shells are of one generation of the page cache, like the anonymous pages and shared
fragments: a comment posted, edited, hidden or deleted, a name changed, an article or
the publication saved, all start a new one, so the next page is rendered afresh. Who
may read the paid text is in the key and decided for each request: a shell with the
whole text is only ever read for a reader allowed to read it.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from django.contrib.messages import get_messages
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse
from django.middleware.csrf import get_token
from django.utils import timezone
from django.utils.html import escape

from newsletter.models import Article
from newsletter.services import comments as comment_service
from newsletter.services.page_cache import (
    PAGE_CACHE_SECONDS,
    fragment_key,
    read,
    shared_fragment,
)
from newsletter.services.page_parameters import Order, discussion_page_number
from publication.models import Publication
from subscriptions.services.access import user_is_paid


class ArticleRenderer(Protocol):
    def __call__(
        self,
        request: HttpRequest,
        *,
        article: Article,
        full: bool,
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse: ...


# In every shell's key: a deploy that changes what a shell holds reads none stored by
# the code before it (unpickling one would fail, or fill in the wrong places).
SHELL_FORMAT = 1


@dataclass(frozen=True)
class Shell:
    """A rendered page with `marker` where the reader's own values go."""

    html: str
    marker: str
    # Who wrote a visible comment shown on this page, and when their newest one was
    # written: a reader with one still in its edit window gets a page of their own.
    recent_comments: dict[int, datetime]

    def filled_for(self, request: HttpRequest) -> str:
        name = escape(comment_service.display_name(user=request.user))
        return self.html.replace(f"{self.marker}-csrf", get_token(request)).replace(
            f"{self.marker}-name", name
        )

    def has_changeable_comment_of(self, *, user_id: Any, now: datetime) -> bool:
        written = self.recent_comments.get(user_id)
        return written is not None and now - written <= comment_service.EDIT_WINDOW


def shell_position(
    request: HttpRequest, *, article: Article, full: bool, publication: Publication
) -> str | None:
    """The key of the shell this request's page is made from; None: render it whole."""
    user = request.user
    if not user.is_authenticated or getattr(user, "is_staff", False):
        return None
    if len(get_messages(request)):  # shown once, to this reader
        return None
    access = comment_service.comment_access(user=user, article=article, publication=publication)
    paid = user_is_paid(user=user)
    order = Order.parse(request.GET.get("order"))
    page = discussion_page_number(request.GET.get("cpage"))
    return ":".join(
        (
            f"shell{SHELL_FORMAT}",
            str(article.pk),
            article.updated_at.isoformat(),
            "full" if full else "free",
            "paid" if paid else "unpaid",
            access.value,
            "named" if user.first_name else "unnamed",
            order.value,
            str(page),
        )
    )


def article_page(
    request: HttpRequest, *, article: Article, full: bool, render_article: ArticleRenderer
) -> HttpResponse | None:
    """The page filled in from its shell (rendering and storing the shell if needed), or
    None when this reader's page must be rendered whole.

    `render_article` is the article view's own renderer (`views.site.render_article`),
    passed in so that this module stays below the view that uses it.
    """
    publication = shared_fragment("publication", Publication.load)
    position = shell_position(request, article=article, full=full, publication=publication)
    if position is None:
        return None
    key = fragment_key(position)
    now = timezone.now()
    shell = read(key)
    if not isinstance(shell, Shell):
        thread = comment_service.comment_thread(
            article=article,
            user=request.user,
            order=Order.parse(request.GET.get("order")),
            page=discussion_page_number(request.GET.get("cpage")),
            publication=publication,
        )
        marker = f"shell-{secrets.token_hex(16)}"
        rendered = render_article(
            request,
            article=article,
            full=full,
            extra_context={
                "csrf_token": f"{marker}-csrf",
                "comment_viewer_name": f"{marker}-name",
                "comment_thread_data": thread,
            },
        )
        shell = Shell(
            html=rendered.content.decode(),
            marker=marker,
            recent_comments=_recent_comments(thread),
        )
        if not shell.has_changeable_comment_of(user_id=request.user.pk, now=now):
            cache.set(key, shell, PAGE_CACHE_SECONDS)
    if shell.has_changeable_comment_of(user_id=request.user.pk, now=now):
        return None
    return HttpResponse(shell.filled_for(request))


def _recent_comments(thread: comment_service.Thread) -> dict[int, datetime]:
    newest: dict[int, datetime] = {}
    entries = [e for top in thread.comments for e in (top, *top.replies)]
    for entry in entries:
        comment = entry.comment
        if entry.is_placeholder or comment.user_id is None:
            continue
        if comment.user_id not in newest or newest[comment.user_id] < comment.created_at:
            newest[comment.user_id] = comment.created_at
    return newest
