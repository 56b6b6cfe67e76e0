"""Newsletter's parts of a reader's data: the deliveries they received and their opens
and clicks, the comments they wrote, a ban on their commenting. Registered with
`subscriptions.reader_data` (the hook's module docstring says what a part must do) from
NewsletterConfig.ready.
"""

from __future__ import annotations

from typing import Any

from newsletter.models import Comment, CommentBan, Delivery
from newsletter.services.comments import erase_comments_of
from newsletter.services.tracking import erase_engagement_of, export_engagement_of
from subscriptions.reader_data import Reader, register_reader_data, row


def _export_deliveries(reader: Reader) -> list[dict[str, Any]]:
    if reader.subscriber is None:
        return []
    return [
        {**row(d), "article_title": d.send.article.title}
        for d in Delivery.objects.filter(subscriber=reader.subscriber).select_related(
            "send__article"
        )
    ]


def _erase_deliveries(reader: Reader) -> None:
    """The ledger rows of what they were sent (their error texts can hold the address).
    A send's counts keep the totals."""
    if reader.subscriber is not None:
        Delivery.objects.filter(subscriber=reader.subscriber).delete()


def _export_comments(reader: Reader) -> list[dict[str, Any]]:
    return [row(c) for c in Comment.objects.filter(user_id=reader.user.pk)]


def _erase_comments(reader: Reader) -> None:
    erase_comments_of(user=reader.user)


def _export_comment_ban(reader: Reader) -> dict[str, Any] | None:
    ban = CommentBan.objects.filter(user_id=reader.user.pk).first()
    return row(ban, exclude=("banned_by_id",)) if ban else None


def _erase_comment_ban(reader: Reader) -> None:
    CommentBan.objects.filter(user_id=reader.user.pk).delete()


def _export_engagement(reader: Reader) -> dict[str, list[dict[str, Any]]] | None:
    if reader.subscriber is None:
        return None
    return export_engagement_of(subscriber=reader.subscriber)


def _erase_engagement(reader: Reader) -> None:
    if reader.subscriber is not None:
        erase_engagement_of(subscriber=reader.subscriber)


def register_reader_data_parts() -> None:
    # Before the deliveries: the opens and clicks are found through them.
    register_reader_data(
        name="engagement",
        models=["newsletter.OpenEvent", "newsletter.ClickEvent"],
        export=_export_engagement,
        erase=_erase_engagement,
    )
    register_reader_data(
        name="deliveries",
        models=["newsletter.Delivery"],
        export=_export_deliveries,
        erase=_erase_deliveries,
    )
    register_reader_data(
        name="comments",
        models=["newsletter.Comment"],
        export=_export_comments,
        erase=_erase_comments,
    )
    register_reader_data(
        name="comment_ban",
        models=["newsletter.CommentBan"],
        export=_export_comment_ban,
        erase=_erase_comment_ban,
    )
    # Editors' records: only staff have them, and a staff account is never erased
    # from the reader's page (accounts.delete_reader_account refuses it).
    register_reader_data(
        name="editor_records", models=["newsletter.Author", "newsletter.BodyImage"]
    )
