"""The Telegram Bot API client: the only module that talks to Telegram.

Configured by `TELEGRAM_BOT_TOKEN`, `TELEGRAM_CHAT_ID`, `TELEGRAM_API_URL` (the public
Bot API by default; point it at a local stand-in for tests and staging) and
`TELEGRAM_TIMEOUT`. Without a token and a chat id, posting is off.

Errors come back as three kinds, because the caller treats them differently
(https://core.telegram.org/bots/api#making-requests):
- `TelegramRetryAfter`: 429 Too Many Requests; `retry_after` says when to try again.
- `TelegramTransientError`: 5xx, timeouts and network errors; try again with backoff.
- `TelegramPermanentError`: any other refusal (400 chat not found, 403 bot was kicked,
  401 bad token); trying again changes nothing until a person fixes something.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
from django.conf import settings
from django.core import checks

CAPTION_LIMIT = 1024
MESSAGE_LIMIT = 4096


class TelegramError(Exception):
    """A Bot API call did not succeed."""

    def __init__(self, description: str, *, status_code: int | None = None) -> None:
        super().__init__(description)
        self.description = description
        self.status_code = status_code


class TelegramRetryAfter(TelegramError):
    def __init__(self, description: str, *, retry_after: int, status_code: int = 429) -> None:
        super().__init__(description, status_code=status_code)
        self.retry_after = retry_after


class TelegramTransientError(TelegramError):
    pass


class TelegramPermanentError(TelegramError):
    pass


class TelegramNotConfigured(TelegramPermanentError):
    pass


@dataclass(frozen=True)
class Photo:
    """A photo to send: by URL (Telegram fetches it) or uploaded from bytes."""

    url: str = ""
    content: bytes = b""
    filename: str = "cover.jpg"


def is_configured() -> bool:
    return bool(settings.TELEGRAM_BOT_TOKEN and settings.TELEGRAM_CHAT_ID)


def configured_chat_id() -> str:
    return str(settings.TELEGRAM_CHAT_ID)


def send_message(*, chat_id: str, text: str) -> dict[str, Any]:
    """sendMessage with HTML parse mode; returns the Message object."""
    return _call("sendMessage", data={"chat_id": chat_id, "text": text, "parse_mode": "HTML"})


def send_photo(*, chat_id: str, photo: Photo, caption: str) -> dict[str, Any]:
    """sendPhoto with an HTML caption; returns the Message object."""
    data = {"chat_id": chat_id, "caption": caption, "parse_mode": "HTML"}
    if photo.url:
        return _call("sendPhoto", data={**data, "photo": photo.url})
    return _call("sendPhoto", data=data, files={"photo": (photo.filename, photo.content)})


def edit_message_text(*, chat_id: str, message_id: int, text: str) -> None:
    _edit(
        "editMessageText",
        data={"chat_id": chat_id, "message_id": message_id, "text": text, "parse_mode": "HTML"},
    )


def edit_message_caption(*, chat_id: str, message_id: int, caption: str) -> None:
    _edit(
        "editMessageCaption",
        data={
            "chat_id": chat_id,
            "message_id": message_id,
            "caption": caption,
            "parse_mode": "HTML",
        },
    )


def _edit(method: str, *, data: dict[str, Any]) -> None:
    try:
        _call(method, data=data)
    except TelegramPermanentError as exc:
        # Telegram refuses an edit that changes nothing; the post already says this.
        if "message is not modified" not in exc.description:
            raise


def _call(
    method: str, *, data: dict[str, Any], files: dict[str, tuple[str, bytes]] | None = None
) -> Any:
    if not settings.TELEGRAM_BOT_TOKEN:
        raise TelegramNotConfigured("Telegram posting is off: TELEGRAM_BOT_TOKEN is not set.")
    url = f"{settings.TELEGRAM_API_URL.rstrip('/')}/bot{settings.TELEGRAM_BOT_TOKEN}/{method}"
    timeout = httpx.Timeout(settings.TELEGRAM_TIMEOUT)
    try:
        if files:
            # multipart/form-data: every field is a string.
            fields = {key: str(value) for key, value in data.items()}
            response = httpx.post(url, data=fields, files=files, timeout=timeout)
        else:
            response = httpx.post(url, json=data, timeout=timeout)
    except httpx.TimeoutException as exc:
        raise TelegramTransientError(
            _scrub(f"{method}: no answer from Telegram ({exc!r})")
        ) from exc
    except httpx.TransportError as exc:
        raise TelegramTransientError(_scrub(f"{method}: cannot reach Telegram ({exc!r})")) from exc
    return _result(method, response)


def _scrub(text: str) -> str:
    """Error texts end up in the admin: never let the bot token travel with them."""
    return text.replace(settings.TELEGRAM_BOT_TOKEN, "<token>")


def _result(method: str, response: httpx.Response) -> Any:
    try:
        payload = response.json()
    except ValueError:
        payload = {}
    if not isinstance(payload, dict):
        payload = {}
    if response.status_code == 200 and payload.get("ok"):
        return payload.get("result")
    description = str(payload.get("description") or response.reason_phrase or "no description")
    error = _scrub(f"{method}: {response.status_code} {description}")
    parameters = payload.get("parameters") or {}
    if response.status_code == 429 or "retry_after" in parameters:
        retry_after = int(parameters.get("retry_after") or 1)
        raise TelegramRetryAfter(error, retry_after=retry_after, status_code=response.status_code)
    if response.status_code >= 500 or response.status_code == 200:
        raise TelegramTransientError(error, status_code=response.status_code)
    raise TelegramPermanentError(error, status_code=response.status_code)


@checks.register(checks.Tags.compatibility)
def check_telegram_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Half a Telegram configuration is a mistake: say which variable is missing."""
    token, chat_id = settings.TELEGRAM_BOT_TOKEN, settings.TELEGRAM_CHAT_ID
    if token and not chat_id:
        return [
            checks.Error(
                "TELEGRAM_BOT_TOKEN is set but TELEGRAM_CHAT_ID is not.",
                hint="Set TELEGRAM_CHAT_ID to the channel's @username or numeric id "
                "(e.g. -1001234567890), or unset TELEGRAM_BOT_TOKEN to turn posting off.",
                id="newsletter.E101",
            )
        ]
    if chat_id and not token:
        return [
            checks.Warning(
                "TELEGRAM_CHAT_ID is set but TELEGRAM_BOT_TOKEN is not: posting is off.",
                hint="Set TELEGRAM_BOT_TOKEN to the token @BotFather gave the bot.",
                id="newsletter.W101",
            )
        ]
    return []
