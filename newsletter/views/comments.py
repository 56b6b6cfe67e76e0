"""The discussion under articles: posting, editing and deleting comments, and display names.

The thread itself is rendered on the article page by `{% comment_thread article %}`;
the views here take the forms it posts and show a page of their own only to explain an
error or ask for a confirmation.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.utils.cache import patch_cache_control, patch_vary_headers
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_http_methods

from newsletter.forms_comments import CommentEditForm, CommentForm, DisplayNameForm
from newsletter.models import Article, Comment
from newsletter.services import comments as comment_service


class SignedInRequest(HttpRequest):
    user: User


def article_path(article: Article) -> str:
    return f"/p/{article.slug}/"


def _published_article(request: HttpRequest, slug: str) -> Article:
    articles = Article.objects.all()
    if not request.user.is_staff:
        articles = articles.filter(status=Article.Status.PUBLISHED)
    return get_object_or_404(articles, slug=slug)


def _comment_location(request: HttpRequest, comment: Comment) -> str:
    """The comment on the page of the discussion that shows it (a new one can be past
    the first page of a long discussion)."""
    page = comment_service.thread_page_of(comment=comment, user=request.user)
    query = f"?order=oldest&cpage={page}" if page > 1 else ""
    return f"{article_path(comment.article)}{query}#comment-{comment.pk}"


def _error_status(error: comment_service.CommentError) -> int:
    if isinstance(error, comment_service.CommentRateLimited):
        return 429
    if isinstance(error, comment_service.CommentNotAllowed | comment_service.EditWindowClosed):
        return 403
    return 400


@require_http_methods(["GET", "POST"])
def thread(request: HttpRequest, slug: str) -> HttpResponse:
    """GET: the discussion on a page of its own. POST: a new comment or reply."""
    article = _published_article(request, slug)
    if request.method == "GET":
        response = render(request, "comments/thread_page.html", {"article": article})
        patch_vary_headers(response, ["Cookie"])
        if request.user.is_authenticated:
            # As on the article page: what shows depends on who asks (editors see hidden
            # comments), so no shared cache may keep a signed-in reader's copy.
            patch_cache_control(response, private=True, no_cache=True)
        return response
    if not request.user.is_authenticated:
        return redirect_to_login(f"{article_path(article)}#comments")
    form = CommentForm(request.POST)
    if form.is_spam():
        # Say nothing useful to a bot; a person never sees the honeypot field.
        return HttpResponseRedirect(f"{article_path(article)}#comments")
    if form.is_valid():
        try:
            comment = comment_service.post_comment(
                user=request.user,
                article=article,
                body=form.cleaned_data["body"],
                parent_id=form.cleaned_data["parent"],
            )
        except comment_service.CommentError as error:
            form.add_error(None, str(error))
            status = _error_status(error)
        else:
            return HttpResponseRedirect(_comment_location(request, comment))
    else:
        status = 400
    return render(
        request,
        "comments/compose.html",
        {"article": article, "form": form, "article_path": article_path(article)},
        status=status,
    )


@login_required
@require_http_methods(["GET", "POST"])
def edit(request: SignedInRequest, pk: int) -> HttpResponse:
    comment = get_object_or_404(
        Comment.objects.select_related("article"), pk=pk, user_id=request.user.pk
    )
    status = 200
    if request.method == "POST":
        form = CommentEditForm(request.POST)
        if form.is_valid():
            try:
                comment_service.edit_comment(
                    user=request.user, comment=comment, body=form.cleaned_data["body"]
                )
            except comment_service.CommentError as error:
                form.add_error(None, str(error))
                status = _error_status(error)
            else:
                return HttpResponseRedirect(_comment_location(request, comment))
        else:
            status = 400
    else:
        form = CommentEditForm(initial={"body": comment.body})
        if not comment_service.can_change(user=request.user, comment=comment):
            form = None
            status = 403
    return render(
        request,
        "comments/edit.html",
        {"comment": comment, "form": form, "article_path": article_path(comment.article)},
        status=status,
    )


@login_required
@require_http_methods(["GET", "POST"])
def delete(request: SignedInRequest, pk: int) -> HttpResponse:
    comment = get_object_or_404(
        Comment.objects.select_related("article"), pk=pk, user_id=request.user.pk
    )
    path = article_path(comment.article)
    error = None
    status = 200
    if request.method == "POST":
        try:
            comment_service.delete_comment(user=request.user, comment=comment)
        except comment_service.CommentError as exc:
            error = str(exc)
            status = _error_status(exc)
        else:
            messages.success(request, "Your comment was deleted.")
            return HttpResponseRedirect(f"{path}#comments")
    elif not comment_service.can_change(user=request.user, comment=comment):
        error = "This comment can no longer be deleted."
        status = 403
    return render(
        request,
        "comments/delete.html",
        {"comment": comment, "error": error, "article_path": path},
        status=status,
    )


@login_required
@require_http_methods(["GET", "POST"])
def display_name(request: SignedInRequest) -> HttpResponse:
    next_url = request.POST.get("next") or request.GET.get("next") or "/account/"
    if not url_has_allowed_host_and_scheme(
        next_url, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        next_url = "/account/"
    status = 200
    if request.method == "POST":
        form = DisplayNameForm(request.POST)
        if form.is_valid():
            try:
                comment_service.set_display_name(user=request.user, name=form.cleaned_data["name"])
            except comment_service.CommentError as error:
                form.add_error("name", str(error))
            else:
                messages.success(request, "Your name is saved.")
                return HttpResponseRedirect(next_url)
        status = 400
    else:
        form = DisplayNameForm(initial={"name": request.user.first_name})
    return render(
        request,
        "comments/display_name.html",
        {"form": form, "next": next_url},
        status=status,
    )
