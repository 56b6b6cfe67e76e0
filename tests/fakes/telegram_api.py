"""A local stand-in for the Telegram Bot API: a real HTTP server on 127.0.0.1.

It answers sendMessage, sendPhoto, editMessageText, editMessageCaption and getMe the way
Telegram does (same JSON envelope, same error texts), records every request, and can be
told to fail the next calls: 429 with retry_after, 400 chat not found, 403 bot was
kicked, 5xx, a photo Telegram cannot fetch, or hang without answering.

    with FakeTelegramAPI(token="123:abc", chats=["@broadside"]) as api:
        settings.TELEGRAM_API_URL = api.url
        ...
        api.fail_next("retry_after", retry_after=1)
        assert api.calls("sendMessage")[0].params["parse_mode"] == "HTML"

Parse mode HTML is checked strictly, following https://core.telegram.org/bots/api#html-style:
only the documented tags, only &lt; &gt; &amp; &quot; and numeric entities, and every
other `<`, `>` and `&` is an error (Telegram forgives a few of these; the stand-in does not,
so an escaping bug cannot hide). Length limits are counted on the visible text after
entity parsing, in UTF-16 code units, as Telegram counts them.
"""

from __future__ import annotations

import email.parser
import email.policy
import html
import itertools
import json
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any, Self
from urllib.parse import parse_qsl

from tests.fakes.base import LocalHTTPServer

CAPTION_LIMIT = 1024
MESSAGE_LIMIT = 4096

FAILURES = {
    "retry_after": 429,
    "chat_not_found": 400,
    "bot_kicked": 403,
    "server_error": 502,
    "bad_photo": 400,
    "hang": 0,
}

# The tags HTML parse mode allows, and the MessageEntity type Telegram reports for each.
_ENTITY_TYPES = {
    "b": "bold", "strong": "bold", "i": "italic", "em": "italic", "u": "underline",
    "ins": "underline", "s": "strikethrough", "strike": "strikethrough",
    "del": "strikethrough", "span": "spoiler", "tg-spoiler": "spoiler", "a": "text_link",
    "code": "code", "pre": "pre", "blockquote": "blockquote", "tg-emoji": "custom_emoji",
}  # fmt: skip
_TAG_RE = re.compile(
    r"<(/?)([a-zA-Z][a-zA-Z0-9-]*)((?:\s+[a-zA-Z-]+\s*=\s*(?:\"[^\"]*\"|'[^']*'))*)\s*>"
)
_ATTR_RE = re.compile(r"([a-zA-Z-]+)\s*=\s*(?:\"([^\"]*)\"|'([^']*)')")
_ENTITY_RE = re.compile(r"&(lt|gt|amp|quot|#[0-9]+|#x[0-9a-fA-F]+);")


class EntityParseError(ValueError):
    pass


class _Refused(Exception):
    def __init__(self, status: int, description: str) -> None:
        super().__init__(description)
        self.status, self.description = status, description


@dataclass
class Entity:
    type: str
    offset: int  # in UTF-16 code units, like Telegram's MessageEntity
    length: int
    url: str = ""


def utf16_length(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def parse_html(text: str) -> tuple[str, list[Entity]]:
    """Telegram's HTML parse mode: the visible text and its entities, or EntityParseError."""
    visible: list[str] = []
    entities: list[Entity] = []
    stack: list[tuple[str, int, str]] = []
    position = 0
    offset = 0
    while position < len(text):
        char = text[position]
        if char == "<":
            match = _TAG_RE.match(text, position)
            if match is None:
                raise EntityParseError(
                    f"Can't find end of the entity starting at byte offset {position}"
                )
            closing, name, attrs = match.group(1), match.group(2).lower(), match.group(3)
            if name not in _ENTITY_TYPES:
                raise EntityParseError(f'Unsupported start tag "{name}" at byte offset {position}')
            if closing:
                if not stack or stack[-1][0] != name:
                    raise EntityParseError(f"Unmatched end tag at byte offset {position}")
                tag, start, url = stack.pop()
                entities.append(
                    Entity(_ENTITY_TYPES[tag], offset=start, length=offset - start, url=url)
                )
            else:
                url = ""
                for attr in _ATTR_RE.finditer(attrs):
                    if attr.group(1).lower() == "href":
                        url = html.unescape(attr.group(2) or attr.group(3) or "")
                if name == "a" and not url:
                    raise EntityParseError("Can't parse entities: a link without href")
                stack.append((name, offset, url))
            position = match.end()
        elif char == "&":
            match = _ENTITY_RE.match(text, position)
            if match is None:
                raise EntityParseError(f"Character '&' is reserved at byte offset {position}")
            piece = html.unescape(match.group(0))
            visible.append(piece)
            offset += utf16_length(piece)
            position = match.end()
        elif char == ">":
            raise EntityParseError(f"Character '>' is reserved at byte offset {position}")
        else:
            visible.append(char)
            offset += utf16_length(char)
            position += 1
    if stack:
        raise EntityParseError(f'Can\'t find end tag corresponding to start tag "{stack[-1][0]}"')
    return "".join(visible), sorted(entities, key=lambda e: e.offset)


@dataclass
class UploadedFile:
    filename: str
    content_type: str
    content: bytes


@dataclass
class RecordedRequest:
    method: str
    token: str
    content_type: str
    params: dict[str, Any]
    files: dict[str, UploadedFile]
    answered: int  # the HTTP status answered, 0 when the request was left hanging
    at: float = field(default_factory=time.monotonic)  # when it arrived


@dataclass
class Message:
    chat_id: str
    message_id: int
    kind: str  # "text" or "photo"
    html: str
    text: str  # as readers see it
    entities: list[Entity]
    photo: str | UploadedFile | None = None
    edits: int = 0


@dataclass
class _Failure:
    kind: str
    retry_after: int
    method: str | None


@dataclass
class FakeTelegramAPI(LocalHTTPServer):
    """`url` is the value for TELEGRAM_API_URL."""

    thread_name = "fake-telegram-api"

    token: str = "123456:TEST-token"
    chats: list[str] = field(default_factory=lambda: ["@broadside"])
    hang_seconds: float = 5.0
    answer_delay: float = 0.0  # seconds before every answer, to make calls overlap

    def __post_init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self.messages: dict[int, Message] = {}
        self._failures: deque[_Failure] = deque()
        self._ids = itertools.count(101)
        self._lock = threading.Lock()
        self._release = threading.Event()

    # --- the HTTP server -----------------------------------------------------------

    def handler_class(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(_Handler):
            fake = api

        return Handler

    def start(self) -> Self:
        self._release.clear()
        return super().start()

    def stop(self) -> None:
        self._release.set()  # let hanging requests go
        super().stop()

    # --- scripting and inspection ---------------------------------------------------

    def fail_next(
        self, kind: str, *, times: int = 1, retry_after: int = 1, method: str | None = None
    ) -> None:
        """Answer the next `times` calls (of `method`, or of any method) with a failure."""
        if kind not in FAILURES:
            raise ValueError(f"unknown failure {kind!r}; one of {sorted(FAILURES)}")
        with self._lock:
            for _ in range(times):
                self._failures.append(_Failure(kind=kind, retry_after=retry_after, method=method))

    def calls(self, method: str | None = None) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if method is None or r.method == method]

    def posts(self, chat_id: str | None = None) -> list[Message]:
        """Messages now in the channel(s), oldest first."""
        with self._lock:
            return [
                m
                for m in sorted(self.messages.values(), key=lambda m: m.message_id)
                if chat_id is None or m.chat_id == chat_id
            ]

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self.messages.clear()
            self._failures.clear()

    # --- the API ---------------------------------------------------------------------

    def _take_failure(self, method: str) -> _Failure | None:
        with self._lock:
            for failure in self._failures:
                if failure.method in (None, method):
                    self._failures.remove(failure)
                    return failure
        return None

    def handle(
        self, method: str, token: str, params: dict[str, Any], files: dict[str, UploadedFile]
    ) -> tuple[int, dict[str, Any]]:
        if token != self.token:
            return 401, _error(401, "Unauthorized")
        failure = self._take_failure(method)
        if failure is not None:
            return _failure_answer(failure)
        if method == "getMe":
            return 200, {"ok": True, "result": {"id": 123456, "is_bot": True, "username": "bot"}}
        handlers = {
            "sendMessage": self._send_message,
            "sendPhoto": self._send_photo,
            "editMessageText": self._edit_text,
            "editMessageCaption": self._edit_caption,
        }
        if method not in handlers:
            return 404, _error(404, "Not Found")
        chat_id = str(params.get("chat_id", ""))
        if chat_id not in self.chats:
            return 400, _error(400, "Bad Request: chat not found")
        try:
            return handlers[method](chat_id, params, files)
        except _Refused as refusal:
            return refusal.status, _error(refusal.status, refusal.description)

    def _formatted(
        self, params: dict[str, Any], key: str, limit: int
    ) -> tuple[str, str, list[Entity]]:
        raw = str(params.get(key, ""))
        if params.get("parse_mode") == "HTML":
            try:
                visible, entities = parse_html(raw)
            except EntityParseError as exc:
                raise _Refused(400, f"Bad Request: can't parse entities: {exc}") from exc
        else:
            visible, entities = raw, []
        if utf16_length(visible.strip()) > limit:
            what = "message caption is too long" if key == "caption" else "message is too long"
            raise _Refused(400, f"Bad Request: {what}")
        if key == "text" and not visible.strip():
            raise _Refused(400, "Bad Request: message text is empty")
        return raw, visible, entities

    def _new_message(self, message: Message) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.messages[message.message_id] = message
        return 200, {"ok": True, "result": _message_json(message)}

    def _send_message(
        self, chat_id: str, params: dict[str, Any], files: dict[str, UploadedFile]
    ) -> tuple[int, dict[str, Any]]:
        raw, visible, entities = self._formatted(params, "text", MESSAGE_LIMIT)
        return self._new_message(Message(chat_id, next(self._ids), "text", raw, visible, entities))

    def _send_photo(
        self, chat_id: str, params: dict[str, Any], files: dict[str, UploadedFile]
    ) -> tuple[int, dict[str, Any]]:
        photo: str | UploadedFile | None = files.get("photo") or params.get("photo")
        if not photo:
            return 400, _error(400, "Bad Request: there is no photo in the request")
        if isinstance(photo, str) and not photo.startswith(("http://", "https://")):
            return 400, _error(400, "Bad Request: wrong remote file identifier specified")
        raw, visible, entities = self._formatted(params, "caption", CAPTION_LIMIT)
        return self._new_message(
            Message(chat_id, next(self._ids), "photo", raw, visible, entities, photo=photo)
        )

    def _edit(
        self, chat_id: str, params: dict[str, Any], key: str, kind: str, limit: int
    ) -> tuple[int, dict[str, Any]]:
        try:
            message_id = int(params.get("message_id", 0))
        except ValueError:
            message_id = 0
        message = self.messages.get(message_id)
        if message is None or message.chat_id != chat_id:
            return 400, _error(400, "Bad Request: message to edit not found")
        if message.kind != kind:
            what = "there is no text in the message to edit"
            if kind == "photo":
                what = "there is no caption in the message to edit"
            return 400, _error(400, f"Bad Request: {what}")
        raw, visible, entities = self._formatted(params, key, limit)
        if raw == message.html:
            return 400, _error(
                400,
                "Bad Request: message is not modified: specified new message content and "
                "reply markup are exactly the same as a current content and reply markup "
                "of the message",
            )
        with self._lock:
            message.html, message.text, message.entities = raw, visible, entities
            message.edits += 1
        return 200, {"ok": True, "result": _message_json(message)}

    def _edit_text(
        self, chat_id: str, params: dict[str, Any], files: dict[str, UploadedFile]
    ) -> tuple[int, dict[str, Any]]:
        return self._edit(chat_id, params, "text", "text", MESSAGE_LIMIT)

    def _edit_caption(
        self, chat_id: str, params: dict[str, Any], files: dict[str, UploadedFile]
    ) -> tuple[int, dict[str, Any]]:
        return self._edit(chat_id, params, "caption", "photo", CAPTION_LIMIT)


def _error(code: int, description: str, **parameters: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"ok": False, "error_code": code, "description": description}
    if parameters:
        body["parameters"] = parameters
    return body


def _failure_answer(failure: _Failure) -> tuple[int, dict[str, Any]]:
    if failure.kind == "retry_after":
        return 429, _error(
            429,
            f"Too Many Requests: retry after {failure.retry_after}",
            retry_after=failure.retry_after,
        )
    if failure.kind == "chat_not_found":
        return 400, _error(400, "Bad Request: chat not found")
    if failure.kind == "bot_kicked":
        return 403, _error(403, "Forbidden: bot was kicked from the channel chat")
    if failure.kind == "server_error":
        return 502, _error(502, "Bad Gateway")
    if failure.kind == "bad_photo":
        return 400, _error(400, "Bad Request: wrong file identifier/HTTP URL specified")
    return 0, {}  # hang


def _message_json(message: Message) -> dict[str, Any]:
    result: dict[str, Any] = {
        "message_id": message.message_id,
        "chat": {"id": message.chat_id, "type": "channel"},
        "date": int(time.time()),
    }
    entities = [
        {
            "type": e.type,
            "offset": e.offset,
            "length": e.length,
            **({"url": e.url} if e.url else {}),
        }
        for e in message.entities
    ]
    if message.kind == "photo":
        result["photo"] = [{"file_id": f"photo-{message.message_id}", "width": 1280}]
        result["caption"] = message.text
        result["caption_entities"] = entities
    else:
        result["text"] = message.text
        result["entities"] = entities
    if message.edits:
        result["edit_date"] = int(time.time())
    return result


def _parse_body(content_type: str, body: bytes) -> tuple[dict[str, Any], dict[str, UploadedFile]]:
    if content_type.startswith("application/json"):
        data = json.loads(body or b"{}")
        return dict(data), {}
    if content_type.startswith("application/x-www-form-urlencoded"):
        return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True)), {}
    if content_type.startswith("multipart/form-data"):
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            f"Content-Type: {content_type}\r\n\r\n".encode() + body
        )
        params: dict[str, Any] = {}
        files: dict[str, UploadedFile] = {}
        for part in message.iter_parts():  # type: ignore[attr-defined]
            name = part.get_param("name", header="content-disposition")
            filename = part.get_filename()
            payload = part.get_payload(decode=True) or b""
            if filename:
                files[name] = UploadedFile(filename, part.get_content_type(), payload)
            else:
                params[name] = payload.decode("utf-8")
        return params, files
    return {}, {}


class _Handler(BaseHTTPRequestHandler):
    fake: FakeTelegramAPI
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output quiet

    def do_GET(self) -> None:
        self._serve(b"")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self._serve(self.rfile.read(length))

    def _serve(self, body: bytes) -> None:
        match = re.fullmatch(r"/bot([^/]+)/(\w+)(?:\?(.*))?", self.path)
        if match is None:
            self._answer(404, _error(404, "Not Found"))
            return
        token, method, query = match.group(1), match.group(2), match.group(3) or ""
        content_type = self.headers.get("Content-Type", "")
        params, files = _parse_body(content_type, body)
        params = {**dict(parse_qsl(query)), **params}
        arrived = time.monotonic()
        if self.fake.answer_delay:
            time.sleep(self.fake.answer_delay)
        status, answer = self.fake.handle(method, token, params, files)
        with self.fake._lock:
            self.fake.requests.append(
                RecordedRequest(method, token, content_type, params, files, status, arrived)
            )
        if status == 0:
            # Hang: hold the connection without answering until released, then drop it.
            self.fake._release.wait(self.fake.hang_seconds)
            self.close_connection = True
            return
        self._answer(status, answer)

    def _answer(self, status: int, answer: dict[str, Any]) -> None:
        payload = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


if __name__ == "__main__":
    # Try the site against it by hand:
    #   python -m tests.fakes.telegram_api  ->  set the printed TELEGRAM_* variables
    import argparse

    parser = argparse.ArgumentParser(description="A local stand-in for the Telegram Bot API.")
    parser.add_argument("--token", default="123456:TEST-token")
    parser.add_argument("--chat", action="append", default=None, help="a chat id it knows")
    arguments = parser.parse_args()
    fake = FakeTelegramAPI(token=arguments.token, chats=arguments.chat or ["@broadside"])
    with fake:
        print(f"TELEGRAM_API_URL={fake.url}")
        print(f"TELEGRAM_BOT_TOKEN={fake.token}")
        print(f"TELEGRAM_CHAT_ID={fake.chats[0]}", flush=True)
        shown: set[int] = set()
        try:
            while True:
                time.sleep(1)
                for message in fake.posts():
                    if message.message_id not in shown:
                        shown.add(message.message_id)
                        print(f"--- {message.message_id} ({message.kind})\n{message.text}")
        except KeyboardInterrupt:
            pass
