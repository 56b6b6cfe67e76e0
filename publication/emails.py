"""Transactional emails to one reader (confirmation, welcome, receipts, reminders).

Every one of them, and allauth's sign-in codes and the comment digests, is built by
`transactional_message`: the publication's sender and reply-to, a Message-ID on the
sender's domain, a Date in UTC, the HTML with its CSS inlined. Newsletter issues go
through `newsletter/services/sending/` instead.
"""

from __future__ import annotations

from email.utils import formataddr
from typing import Any

import css_inline
from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.db import transaction
from django.template.loader import render_to_string

from config.mail import ascii_domain, date_header, message_id, parse_mailbox, sender_domain
from publication.models import Publication

_inliner = css_inline.CSSInliner(keep_style_tags=False, keep_at_rules=True)


def sender_address(publication: Publication) -> str:
    """The From header value, built by the email library: a name with a comma or a
    quote is quoted, a non-ASCII name is encoded (RFC 5322 / RFC 2047)."""
    if publication.sender_email:
        address = parse_mailbox(publication.sender_email)
        name = (publication.sender_name or publication.name).strip()
        # The domain as DNS writes it: formataddr takes only an ASCII address, and an
        # internationalised domain (`Bücher.example`) goes out in IDNA.
        return formataddr((name, f"{address.username}@{ascii_domain(address.domain)}"))
    return settings.DEFAULT_FROM_EMAIL


def reply_to_addresses(publication: Publication) -> list[str]:
    return [publication.reply_to_email] if publication.reply_to_email else []


def transactional_message(
    *,
    to: str,
    subject: str,
    text: str,
    html: str,
    publication: Publication | None = None,
    reply_to: list[str] | None = None,
) -> EmailMultiAlternatives:
    """One reader's email from the publication, with the headers every email needs.

    `html` (a whole document; its CSS is inlined here) may be empty for text only.
    """
    publication = publication or Publication.load()
    from_email = sender_address(publication)
    message = EmailMultiAlternatives(
        subject=subject,
        body=text,
        from_email=from_email,
        to=[to],
        reply_to=reply_to if reply_to is not None else reply_to_addresses(publication),
        headers={
            "Date": date_header(),
            "Message-ID": message_id(domain=sender_domain(from_email)),
        },
    )
    if html:
        message.attach_alternative(_inliner.inline(html), "text/html")
    return message


def email_context(publication: Publication, **context: Any) -> dict[str, Any]:
    """What every email template gets: the publication, the site and the sender."""
    return {
        "publication": publication,
        "site_url": settings.SITE_URL,
        "account_url": f"{settings.SITE_URL}/account/",
        **context,
    }


def send_transactional_email(
    *, to: str, subject: str, template: str, context: dict[str, Any] | None = None
) -> None:
    """Render `email/<template>.html` and `.txt` and send them as one message."""
    publication = Publication.load()
    ctx = email_context(publication, subject=subject, **(context or {}))
    message = transactional_message(
        to=to,
        subject=subject,
        text=render_to_string(f"email/{template}.txt", ctx),
        html=render_to_string(f"email/{template}.html", ctx),
        publication=publication,
    )
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
