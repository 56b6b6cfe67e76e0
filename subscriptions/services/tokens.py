"""Signed tokens in links we email: confirmation (expiring) and unsubscribe (lasting)."""

from __future__ import annotations

from django.conf import settings
from django.core import signing
from django.urls import reverse

CONFIRM_SALT = "broadside.subscriptions.confirm"
UNSUBSCRIBE_SALT = "broadside.subscriptions.unsubscribe"
CONFIRMATION_MAX_AGE = 60 * 60 * 24 * 3  # three days


class InvalidToken(Exception):
    """The token was tampered with, is malformed or has expired."""


def make_confirmation_token(
    *, subscriber_id: int, email: str, source_article_id: int | None = None
) -> str:
    """`source_article_id`: the article a returning reader signed up again from, credited
    only if they confirm (`signup.confirm_subscriber`)."""
    data: dict[str, object] = {"s": subscriber_id, "e": email.lower()}
    if source_article_id is not None:
        data["a"] = source_article_id
    return signing.dumps(data, salt=CONFIRM_SALT)


def _load_confirmation_token(token: str) -> dict:
    try:
        return signing.loads(token, salt=CONFIRM_SALT, max_age=CONFIRMATION_MAX_AGE)
    except signing.SignatureExpired as exc:
        raise InvalidToken("This confirmation link has expired.") from exc
    except signing.BadSignature as exc:
        raise InvalidToken("This confirmation link is not valid.") from exc


def read_confirmation_token(*, token: str) -> tuple[int, str]:
    data = _load_confirmation_token(token)
    return int(data["s"]), str(data["e"])


def read_confirmation_source(*, token: str) -> int | None:
    """The article the link's signup came from, if it carries one."""
    source = _load_confirmation_token(token).get("a")
    return source if isinstance(source, int) else None


def make_unsubscribe_token(*, subscriber_id: int) -> str:
    return signing.Signer(salt=UNSUBSCRIBE_SALT).sign(str(subscriber_id))


def read_unsubscribe_token(*, token: str) -> int:
    try:
        return int(signing.Signer(salt=UNSUBSCRIBE_SALT).unsign(token))
    except (signing.BadSignature, ValueError) as exc:
        raise InvalidToken("This unsubscribe link is not valid.") from exc


def absolute_url(path: str) -> str:
    return f"{settings.SITE_URL}{path}"


def confirmation_url(
    *, subscriber_id: int, email: str, source_article_id: int | None = None
) -> str:
    token = make_confirmation_token(
        subscriber_id=subscriber_id, email=email, source_article_id=source_article_id
    )
    return absolute_url(reverse("subscriptions:confirm", kwargs={"token": token}))


def unsubscribe_url(*, subscriber_id: int) -> str:
    token = make_unsubscribe_token(subscriber_id=subscriber_id)
    return absolute_url(reverse("subscriptions:unsubscribe", kwargs={"token": token}))
