"""django-allauth customisation, in one place.

Readers sign in by an emailed code. Every reader account is tied to the subscriber
with the same address: when the address is verified (signup), when they sign in, and
before a sign-in code is sent to a subscriber who has no account yet
(`ReaderRequestLoginCodeForm`), so confirmed and imported readers sign in straight away.
"""

from __future__ import annotations

from typing import Any

from allauth.account.adapter import DefaultAccountAdapter
from allauth.account.forms import RequestLoginCodeForm
from allauth.account.models import EmailAddress
from django.core.mail import EmailMessage
from django.http import HttpRequest

from newsletter.models import Publication
from subscriptions.services.accounts import link_reader_account, prepare_sign_in
from subscriptions.services.notifications import (
    email_context,
    sender_address,
    transactional_message,
)


class ReaderAccountAdapter(DefaultAccountAdapter):
    def get_from_email(self) -> str:
        return sender_address(Publication.load())

    def format_email_subject(self, subject: str) -> str:
        return f"{subject} · {Publication.load().name}"

    def render_mail(
        self,
        template_prefix: str,
        email: str | list[str],
        context: dict[str, Any],
        headers: dict[str, str] | None = None,
    ) -> EmailMessage:
        """allauth's emails (sign-in codes, verification) from the project's templates,
        built like every other transactional email (sender, reply-to, Message-ID)."""
        publication = Publication.load()
        context = email_context(publication, **context)
        rendered = super().render_mail(template_prefix, email, context, headers)
        html = next(
            (str(content) for content, kind in getattr(rendered, "alternatives", [])
             if kind == "text/html"),
            "",
        )  # fmt: skip
        return transactional_message(
            to=rendered.to[0],
            subject=rendered.subject,
            text=rendered.body,
            html=html,
            publication=publication,
        )

    def confirm_email(self, request: HttpRequest, email_address: EmailAddress) -> bool:
        confirmed = super().confirm_email(request, email_address)
        if confirmed:
            link_reader_account(
                user=email_address.user,
                email=email_address.email,
                signup=True,
                ip=request.META.get("REMOTE_ADDR"),
            )
        return confirmed

    def login(self, request: HttpRequest, user: Any) -> None:
        super().login(request, user)
        if getattr(user, "email", ""):
            link_reader_account(user=user, email=user.email)


class ReaderRequestLoginCodeForm(RequestLoginCodeForm):
    """Creates the account of a subscriber who has none before the code is sent.

    Only for subscribers who confirmed or were imported: their address is known good.
    """

    def clean_email(self) -> str:
        email = self.cleaned_data.get("email") or ""
        if email:
            prepare_sign_in(email=email)
        return super().clean_email()
