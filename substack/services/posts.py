"""Posts: published ones archived as published articles, the rest as drafts."""

from __future__ import annotations

from collections.abc import Callable

from django.db import IntegrityError, transaction
from django.utils.text import slugify

from newsletter.models import Article
from subscriptions.services.imports import (
    ImportFileError,
    parse_bool,
    parse_datetime_value,
    read_csv,
)
from substack.services.archive import DAMAGED_MEMBER, Export
from substack.services.markup import convert_post, localise_images
from substack.services.report import (
    SubstackReport,
)

MAX_POST_BYTES = 20 * 1024 * 1024

AUDIENCE_VISIBILITY = {
    "everyone": Article.Visibility.PUBLIC,
    "only_free": Article.Visibility.SUBSCRIBERS,
    "only_paid": Article.Visibility.PAID,
    "founding": Article.Visibility.PAID,
}


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
