"""Template tags of the discussion: `{% comment_thread article %}` and comment counts."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from django import template

from newsletter.forms_comments import CommentForm
from newsletter.models import Article, Comment
from newsletter.services import comments as comment_service
from newsletter.services.page_parameters import discussion_page_number
from publication.models import Publication

register = template.Library()


@register.inclusion_tag("comments/thread.html", takes_context=True)
def comment_thread(context: template.Context, article: Article) -> dict[str, Any]:
    """The whole discussion under an article, as the reader of the page may see it."""
    request = context.get("request")
    user = getattr(request, "user", None)
    order = comment_service.Order.parse(request.GET.get("order") if request else None)
    page = discussion_page_number(request.GET.get("cpage") if request else None)
    publication = context.get("publication")
    # The page's own, when it was computed before rendering (a signed-in reader's shell).
    thread = context.get("comment_thread_data")
    if not isinstance(thread, comment_service.Thread):
        thread = comment_service.comment_thread(
            article=article,
            user=user,
            order=order,
            page=page,
            publication=publication if isinstance(publication, Publication) else None,
        )
    path = f"/p/{article.slug}/"
    back = quote(f"{path}#comments")
    return {
        "thread": thread,
        "article": article,
        "user": user,
        "form": CommentForm(),
        "post_url": f"{path}comments/",
        "login_url": f"/accounts/login/?next={back}",
        "name_url": f"/account/name/?next={back}",
        "viewer_name": context.get("comment_viewer_name")
        or (
            comment_service.display_name(user=user)
            if user is not None and user.is_authenticated
            else ""
        ),
        "access": thread.access.value,
        "upgrades_open": context.get("upgrades_open", False),
    }


@register.simple_tag
def comment_count(article: Article) -> int:
    """Visible comments of an article: the `with_comment_counts` annotation when present."""
    annotated = getattr(article, "comment_count", None)
    if annotated is not None:
        return int(annotated)
    return Comment.objects.filter(article=article, status=Comment.Status.VISIBLE).count()
