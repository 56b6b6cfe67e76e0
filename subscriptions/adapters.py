"""django-allauth customisation, in one place.

Readers sign in by an emailed code. Every reader account is tied to the subscriber
with the same address: when the address is verified (signup), when they sign in, and
before a sign-in code is sent to a subscriber who has no account yet
(`ReaderRequestLoginCodeForm`), so confirmed and imported readers sign in straight away.
"""

from __future__ import annotations

from typing import Any

from allauth.account.adapter import DefaultAccountAdapter
from allauth.account.forms import LoginForm, RequestLoginCodeForm, SignupForm
from allauth.account.models import EmailAddress
from django.core.mail import EmailMessage
from django.http import HttpRequest

from publication.emails import (
    email_context,
    sender_address,
    transactional_message,
)
from publication.models import Publication
from subscriptions.forms import AddressField
from subscriptions.services.accounts import link_reader_account, prepare_sign_in
from subscriptions.services.addresses import InvalidAddress, normalize_email
from subscriptions.services.ratelimit import client_ip


def _normalized_for_form(email: str) -> str:
    """The one address rule, in the words every reader form uses for it."""
    return AddressField().clean(email)


class ReaderAccountAdapter(DefaultAccountAdapter):
    error_messages = {
        **DefaultAccountAdapter.error_messages,
        "incorrect_code": "That is not the code we emailed. Check it and try again.",
        # Both after three wrong codes and after too many codes asked for one address.
        "too_many_login_attempts": (
            "Too many attempts with this address, so that code no longer works. Enter "
            "your address again (after a few minutes, if it says so again) and we will "
            "email you a new code."
        ),
        "rate_limited": "Too many attempts. Please wait a few minutes and try again.",
    }

    def clean_email(self, email: str) -> str:
        """Every address allauth stores (signup, added addresses) in the one normal form
        (`subscriptions.services.addresses`), so it is the same text as the subscriber's."""
        return super().clean_email(_normalized_for_form(email))

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
        """The code (or link) sent to verify an address, entered where it was asked for:
        the signup's opt-in (`link_reader_account(signup=True)`).

        Not allauth's `email_confirmed` signal, which a sign-in code also sends when it
        proves the address of an account whose signup was never finished: anyone can
        start a signup for any address, so that signup is nobody's consent, and the
        owner who signs in only asked to sign in (`login` links them to their
        subscriber, which stays as it was). Nor an editor marking the address verified
        in the admin, which vouches for it without the reader.
        """
        confirmed = super().confirm_email(request, email_address)
        if confirmed:
            link_reader_account(
                user=email_address.user,
                email=email_address.email,
                signup=True,
                ip=client_ip(request),
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

    email = AddressField()

    def clean_email(self) -> str:
        if email := self.cleaned_data.get("email"):
            prepare_sign_in(email=email)
        return super().clean_email()


class ReaderSignupForm(SignupForm):
    """Signup takes exactly the addresses sign-in and the subscribe form take."""

    email = AddressField()


class ReaderLoginForm(LoginForm):
    """The sign-in page: an address is looked up in the one normal form, so
    `Mixed.Case@Example.com` and an internationalised domain find their account."""

    def clean_login(self) -> str:
        login = super().clean_login()
        if "@" in login:
            try:
                return normalize_email(login)
            except InvalidAddress:
                return login  # allauth answers it as an unknown address
        return login
