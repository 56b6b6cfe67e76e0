"""Transactional emails to one reader (confirmation, welcome, receipts, reminders).

Newsletter issues go through `newsletter/services/sending.py` instead.
"""

from __future__ import annotations

from typing import Any

import css_inline
from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.db import transaction
from django.template.loader import render_to_string

from newsletter.models import Publication

_inliner = css_inline.CSSInliner(keep_style_tags=False)


def sender_address(publication: Publication) -> str:
    if publication.sender_email:
        name = publication.sender_name or publication.name
        return f"{name} <{publication.sender_email}>"
    return settings.DEFAULT_FROM_EMAIL


def send_transactional_email(
    *, to: str, subject: str, template: str, context: dict[str, Any] | None = None
) -> None:
    """Render `email/<template>.html` and `.txt` and send them as one message."""
    publication = Publication.load()
    ctx = {"publication": publication, "site_url": settings.SITE_URL, **(context or {})}
    text = render_to_string(f"email/{template}.txt", ctx)
    html = _inliner.inline(render_to_string(f"email/{template}.html", ctx))
    message = EmailMultiAlternatives(
        subject=subject,
        body=text,
        from_email=sender_address(publication),
        to=[to],
        reply_to=[publication.reply_to_email] if publication.reply_to_email else None,
    )
    message.attach_alternative(html, "text/html")
    message.send()


def send_email_on_commit(
    *, to: str, subject: str, template: str, context: dict[str, Any] | None = None
) -> None:
    """Send once the surrounding transaction commits; a mail server that refuses it is
    logged, and neither undoes nor repeats the change the email is about."""
    transaction.on_commit(
        lambda: send_transactional_email(
            to=to, subject=subject, template=template, context=context
        ),
        robust=True,
    )
