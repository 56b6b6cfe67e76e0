"""Local stand-ins for two providers' batch sending APIs, as anymail calls them.

    with FakeMailgun(latency=0.05) as mailgun:      # POST /v3/<domain>/messages
        settings.ANYMAIL = {"MAILGUN_API_KEY": "key", "MAILGUN_API_URL": mailgun.url + "/v3"}
    with FakePostmark(latency=0.05) as postmark:    # POST /email/batch (and /email)
        settings.ANYMAIL = {"POSTMARK_SERVER_TOKEN": "t", "POSTMARK_API_URL": postmark.url + "/"}

    fake.copies        # Copy(to, subject, html, text, headers): each recipient's own
                       # message, after the provider's merge (Mailgun's %recipient.x%)
    fake.calls         # API calls answered, with how many recipients each
    fake.fail_calls(503, times=1)   # answer the next call(s) as a whole with this status
    fake.fail_calls(502, body=b"<html>...", content_type="text/html")  # ... and this body
    fake.reject("a@example.com")    # Postmark: ErrorCode 406 (inactive) for this address;
                                    # Mailgun: the whole call is refused with 400
    postmark.errors["b@example.com"] = (405, "Not allowed to send")  # any other ErrorCode

`latency` (seconds) is added to every answer: a provider's API is tens of
milliseconds away. `keep_copies=False` (benchmarks) only counts.
"""

from __future__ import annotations

import email.parser
import email.policy
import itertools
import json
import re
import threading
import time
from abc import abstractmethod
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl

from tests.fakes.base import LocalHTTPServer


@dataclass(frozen=True)
class Copy:
    to: str
    subject: str
    html: str
    text: str
    headers: dict[str, str]


class _FakeESP(LocalHTTPServer):
    provider = ""

    def __init__(self, *, latency: float = 0.0, keep_copies: bool = True) -> None:
        self.latency = latency
        self.keep_copies = keep_copies
        self.copies: list[Copy] = []
        self.calls: list[int] = []
        self.accepted = 0
        self.rejected: set[str] = set()
        self._failures: list[tuple[int, bytes | None, str]] = []
        # Each call's request headers (the API token), and each message's stream.
        self.request_headers: list[dict[str, str]] = []
        self.message_streams: list[str | None] = []
        # Postmark: addresses it calls invalid (ErrorCode 300), and how many of the last
        # messages of each batch it leaves without an answer.
        self.invalid: set[str] = set()
        self.errors: dict[str, tuple[int, str]] = {}
        self.unanswered = 0
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def fail_calls(
        self,
        status: int,
        *,
        times: int = 1,
        body: bytes | None = None,
        content_type: str = "application/json",
    ) -> None:
        """Answer the next `times` calls with `status` and `body` (by default the
        provider's JSON error object, "Try later")."""
        with self._lock:
            self._failures += [(status, body, content_type)] * times

    def reject(self, address: str) -> None:
        self.rejected.add(address.lower())

    def recipients(self) -> list[str]:
        with self._lock:
            return [c.to for c in self.copies]

    def _next_failure(self) -> tuple[int, bytes | None, str] | None:
        with self._lock:
            return self._failures.pop(0) if self._failures else None

    def _record(self, copies: list[Copy], accepted: int) -> None:
        with self._lock:
            self.calls.append(accepted)
            self.accepted += accepted
            if self.keep_copies:
                self.copies += copies

    def _message_id(self) -> str:
        return f"{self.provider}-{next(self._ids)}"

    @abstractmethod
    def answer(self, path: str, content_type: str, body: bytes) -> tuple[int, Any]:
        """The provider's status and JSON answer to one API call."""

    def handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # The status line, headers and body in one write (flushed after each
            # request): in two, the client's delayed ACK would add 40 ms to every call.
            wbufsize = 1 << 16

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if fake.keep_copies:  # not in a benchmark's sink
                    with fake._lock:
                        fake.request_headers.append(dict(self.headers))
                if fake.latency:
                    time.sleep(fake.latency)
                failure = fake._next_failure()
                content_type = "application/json"
                if failure is not None:
                    status, data, content_type = failure
                    if data is None:
                        data = json.dumps({"ErrorCode": status, "Message": "Try later"}).encode()
                else:
                    status, answer = fake.answer(
                        self.path, self.headers.get("Content-Type", ""), body
                    )
                    data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


class FakePostmark(_FakeESP):
    """Postmark's /email/batch: an array of complete messages, an answer for each."""

    provider = "postmark"
    thread_name = "fake-postmark"

    def answer(self, path: str, content_type: str, body: bytes) -> tuple[int, Any]:
        payload = json.loads(body)
        if path.rstrip("/").endswith("/email/batch"):
            messages = payload
        elif path.rstrip("/").endswith("/email"):
            messages = [payload]
        else:
            return 404, {"ErrorCode": 404, "Message": f"No such endpoint {path}"}
        if len(messages) > 500:
            return 422, {"ErrorCode": 300, "Message": "Too many messages in one batch."}
        answers, copies = [], []
        if self.keep_copies:
            with self._lock:
                self.message_streams += [message.get("MessageStream") for message in messages]
        for message in messages:
            to = message["To"]
            address = _addr_spec(to)
            if address.lower() in self.invalid:
                answers.append({"ErrorCode": 300, "Message": "Invalid 'To' address."})
                continue
            if address.lower() in self.errors:
                code, text = self.errors[address.lower()]
                answers.append({"ErrorCode": code, "Message": text})
                continue
            if address.lower() in self.rejected:
                answers.append(
                    {
                        "ErrorCode": 406,
                        "Message": "You tried to send to a recipient that has been marked as "
                        f"inactive.\nFound inactive addresses: {address}.\nInactive "
                        "recipients are ones that have generated a hard bounce or a spam "
                        "complaint.",
                    }
                )
                continue
            headers = {h["Name"]: h["Value"] for h in message.get("Headers", [])}
            copies.append(
                Copy(
                    to=address,
                    subject=message.get("Subject", ""),
                    html=message.get("HtmlBody", ""),
                    text=message.get("TextBody", ""),
                    headers=headers,
                )
            )
            answers.append(
                {
                    "ErrorCode": 0,
                    "Message": "OK",
                    "MessageID": self._message_id(),
                    "SubmittedAt": "2026-01-01T00:00:00Z",
                    "To": to,
                }
            )
        if self.unanswered:
            answers = answers[: -self.unanswered]
        self._record(copies, len(copies))
        return 200, answers if path.rstrip("/").endswith("/batch") else answers[0]


class FakeMailgun(_FakeESP):
    """Mailgun's /v3/<domain>/messages with recipient-variables: one copy per recipient,
    %recipient.KEY% replaced from that recipient's variables (also in h: headers)."""

    provider = "mailgun"
    thread_name = "fake-mailgun"

    def answer(self, path: str, content_type: str, body: bytes) -> tuple[int, Any]:
        if not re.fullmatch(r"/v3/[^/]+/messages", path):
            return 404, {"message": f"No such endpoint {path}"}
        fields = _form_fields(content_type, body)
        recipients = fields.get("to", [])
        if len(recipients) > 1000:
            return 400, {"message": "Too many recipients (the limit is 1000)."}
        variables = json.loads(fields.get("recipient-variables", ["{}"])[0])
        refused = [r for r in recipients if _addr_spec(r).lower() in self.rejected]
        if refused:
            return 400, {"message": f"'to' parameter is not a valid address: {refused[0]}"}
        if not self.keep_copies:  # a benchmark's stand-in: count, merge nothing
            self._record([], len(recipients))
            return 200, {"id": f"<{self._message_id()}@mailgun.test>", "message": "Queued."}
        copies = []
        for to in recipients:
            address = _addr_spec(to)
            values = variables.get(address, {})

            def merged(text: str, values: dict[str, Any] = values) -> str:
                return re.sub(
                    r"%recipient\.([^%]+)%", lambda m: str(values.get(m.group(1), "")), text
                )

            headers = {
                name[2:]: merged(values[0])
                for name, values in fields.items()
                if name.startswith("h:")
            }
            copies.append(
                Copy(
                    to=address,
                    subject=merged(fields.get("subject", [""])[0]),
                    html=merged(fields.get("html", [""])[0]),
                    text=merged(fields.get("text", [""])[0]),
                    headers=headers,
                )
            )
        self._record(copies, len(copies))
        return 200, {"id": f"<{self._message_id()}@mailgun.test>", "message": "Queued. Thank you."}


def _addr_spec(value: str) -> str:
    match = re.search(r"<([^>]+)>\s*$", value)
    return match.group(1) if match else value.strip()


def _form_fields(content_type: str, body: bytes) -> dict[str, list[str]]:
    fields: dict[str, list[str]] = {}
    if content_type.startswith("multipart/form-data"):
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            f"Content-Type: {content_type}\r\n\r\n".encode() + body
        )
        for part in message.iter_parts():  # type: ignore[attr-defined]
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True) or b""
            fields.setdefault(name, []).append(payload.decode("utf-8"))
        return fields
    for name, value in parse_qsl(body.decode("utf-8"), keep_blank_values=True):
        fields.setdefault(name, []).append(value)
    return fields


def main() -> None:
    """`python -m tests.fakes.esp mailgun|postmark --latency-ms 50`: the benchmark's
    stand-in in a process of its own; prints the port, then the number of messages
    accepted each time a line arrives on stdin (EOF stops it)."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("provider", choices=["mailgun", "postmark"])
    parser.add_argument("--latency-ms", type=float, default=50.0)
    args = parser.parse_args()
    kind = FakeMailgun if args.provider == "mailgun" else FakePostmark
    fake = kind(latency=args.latency_ms / 1000, keep_copies=False).start()
    print(fake.url.rsplit(":", 1)[1], flush=True)
    for _line in sys.stdin:
        print(fake.accepted, flush=True)
    fake.stop()


if __name__ == "__main__":
    main()
