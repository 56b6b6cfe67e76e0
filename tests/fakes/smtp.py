"""A real SMTP server (aiosmtpd) that captures every message, for tests and benchmarks.

    server = FakeSMTPServer().start()       # binds 127.0.0.1 on a free port
    server.refuse("a@example.com", code=550)            # always refuse this recipient
    server.refuse("b@example.com", code=451, times=1)   # refuse once, then accept
    FakeSMTPServer(offer_8bitmime=False)   # a server that takes 7bit only (refuses 8bit)
    FakeSMTPServer(offer_smtputf8=True)    # offers SMTPUTF8 (RFC 6531)
    FakeSMTPServer(offer_pipelining=False) # does not offer PIPELINING (RFC 2920)
    server.pipelined  # MAIL FROMs that arrived with the next command already sent
    ... point EMAIL_HOST/EMAIL_PORT (or EMAIL_URL=server.url) at it ...
    server.messages   # CapturedMessage(mail_from, rcpt_tos, data, message)
    server.stop()

Run it as a process (the benchmark's sink): `python -m tests.fakes.smtp --count-only`
prints the port, then the number of messages received every time it is asked on stdin.
"""

from __future__ import annotations

import argparse
import asyncio
import email
import email.message
import email.policy
import logging
import socket
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from tests.fakes.base import LocalServer

logging.getLogger("mail.log").setLevel(logging.WARNING)


@dataclass(frozen=True)
class CapturedMessage:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    mail_options: tuple[str, ...] = ()

    @property
    def message(self) -> email.message.EmailMessage:
        parsed = email.message_from_bytes(self.data, policy=email.policy.default)
        assert isinstance(parsed, email.message.EmailMessage)
        return parsed


@dataclass
class _Refusal:
    code: int
    text: str
    times: int | None
    at_data: bool = False


class _Handler:
    def __init__(self, server: FakeSMTPServer) -> None:
        self.server = server

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        await self.server._wait_while_held()
        answer = self.server._answer_for(address, at_data=False)
        if answer is not None:
            return answer
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list
    ) -> list[str]:
        session.host_name = hostname
        if not self.server.offer_8bitmime:
            responses = [r for r in responses if r[4:] != "8BITMIME"]
        if self.server.offer_pipelining:
            # aiosmtpd reads commands one by one from its stream, so pipelined commands
            # are answered in order; it only does not say so.
            responses = [*responses[:-1], "250-PIPELINING", responses[-1]]
        return responses

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        # Whether the client sent on without waiting for this command's reply: its next
        # command is already in the server's read buffer (RFC 2920).
        reader: Any = server._reader
        if reader is not None and len(getattr(reader, "_buffer", b"")):
            with self.server._lock:
                self.server.pipelined += 1
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.server.data_delay:
            await asyncio.sleep(self.server.data_delay)
        content = envelope.content
        answer = self.server._answer_for(envelope.rcpt_tos[0], at_data=True)
        if answer is not None:
            return answer
        if not self.server.offer_8bitmime and isinstance(content, bytes) and not content.isascii():
            # RFC 6152: 8bit data only after the server offered 8BITMIME.
            return "554 5.6.1 8bit message content, but 8BITMIME was not offered"
        self.server._capture(envelope)
        return "250 Message accepted for delivery"


class FakeSMTPServer(LocalServer):
    """aiosmtpd on its own event loop thread; bind to port 0 and read `port`."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        keep_messages: bool = True,
        offer_8bitmime: bool = True,
        offer_smtputf8: bool = False,
        offer_pipelining: bool = True,
    ) -> None:
        self.host = host
        self.port = port
        self.keep_messages = keep_messages
        self.offer_8bitmime = offer_8bitmime
        self.offer_smtputf8 = offer_smtputf8
        self.offer_pipelining = offer_pipelining
        self.pipelined = 0
        self.messages: list[CapturedMessage] = []
        self.received = 0
        self.connections = 0
        self.held = 0
        # Seconds each message's DATA takes to be answered: a slow mail server.
        self.data_delay = 0.0
        self._hold_after: int | None = None
        self.refused: list[tuple[str, int]] = []
        self._refusals: dict[str, _Refusal] = {}
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._factory: Any = None
        self._transports: set[Any] = set()

    @property
    def url(self) -> str:
        return f"smtp://{self.host}:{self.port}"

    def refuse(
        self,
        address: str,
        *,
        code: int = 550,
        text: str = "",
        times: int | None = None,
        at_data: bool = False,
    ):
        """Answer RCPT TO for this address with `code` (`times` times, or always); with
        `at_data`, answer the end of its message's content instead."""
        text = text or ("Mailbox unavailable" if code >= 500 else "Try again later")
        with self._lock:
            self._refusals[address.lower()] = _Refusal(
                code=code, text=text, times=times, at_data=at_data
            )
        return self

    def hold_after(self, count: int) -> None:
        """Once `count` messages are in, keep every RCPT TO waiting until `release()`.

        Freezes all senders at a known point of the SMTP dialogue: before the recipient
        is accepted, so no message is half-delivered while they wait.
        """
        self._hold_after = count

    def release(self) -> None:
        self._hold_after = None

    async def _wait_while_held(self) -> None:
        if self._hold_after is None or self.received < self._hold_after:
            return
        with self._lock:
            self.held += 1
        try:
            while self._hold_after is not None and self.received >= self._hold_after:
                await asyncio.sleep(0.01)
        finally:
            with self._lock:
                self.held -= 1

    def _answer_for(self, address: str, *, at_data: bool) -> str | None:
        with self._lock:
            refusal = self._refusals.get(address.lower())
            if refusal is None or refusal.at_data != at_data:
                return None
            if refusal.times is not None:
                if refusal.times <= 0:
                    return None
                refusal.times -= 1
            self.refused.append((address, refusal.code))
            return f"{refusal.code} {refusal.text}"

    def _capture(self, envelope: Envelope) -> None:
        with self._lock:
            self.received += 1
            if self.keep_messages:
                data = envelope.content
                assert isinstance(data, bytes)
                self.messages.append(
                    CapturedMessage(
                        mail_from=str(envelope.mail_from),
                        rcpt_tos=tuple(envelope.rcpt_tos),
                        data=data,
                        mail_options=tuple(envelope.mail_options),
                    )
                )

    def recipients(self) -> list[str]:
        with self._lock:
            return [rcpt for m in self.messages for rcpt in m.rcpt_tos]

    def clear(self) -> None:
        with self._lock:
            self.messages.clear()
            self.received = 0
            self.connections = 0
            self.pipelined = 0
            self.refused.clear()

    def wait_for(self, count: int, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.received >= count:
                return True
            time.sleep(0.01)
        return self.received >= count

    def start(self) -> FakeSMTPServer:
        ready = threading.Event()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            handler = _Handler(self)

            server = self

            class CountingSMTP(SMTP):
                def connection_made(self, transport: Any) -> None:
                    with server._lock:
                        server.connections += 1
                    server._transports.add(transport)
                    super().connection_made(transport)

                def connection_lost(self, error: Exception | None) -> None:
                    server._transports.discard(self.transport)
                    super().connection_lost(error)

            def factory() -> SMTP:
                return CountingSMTP(
                    handler,
                    hostname="fake-smtp.test",
                    loop=loop,
                    enable_SMTPUTF8=server.offer_smtputf8,
                )

            self._factory = factory
            self._server = loop.run_until_complete(loop.create_server(factory, sock=sock))
            ready.set()
            loop.run_forever()
            self._server.close()
            loop.run_until_complete(self._server.wait_closed())
            loop.close()

        self._thread = threading.Thread(target=run, name="fake-smtp", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("The fake SMTP server did not start.")
        return self

    def go_down(self) -> None:
        """An outage: drop every connection mid-dialogue and refuse new ones."""

        async def down() -> None:
            assert self._server is not None
            self._server.close()
            for transport in list(self._transports):
                transport.abort()

        self._run_in_loop(down())

    def come_back(self) -> None:
        """Listen again on the same port after `go_down()`."""

        async def up() -> None:
            assert self._loop is not None
            self._server = await self._loop.create_server(
                self._factory, self.host, self.port, reuse_address=True
            )

        self._run_in_loop(up())

    def _run_in_loop(self, coroutine: Any) -> None:
        assert self._loop is not None, "start() the server first"
        asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(10)

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop = None
        self._thread = None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--count-only", action="store_true", help="do not keep messages")
    args = parser.parse_args()
    server = FakeSMTPServer(port=args.port, keep_messages=not args.count_only).start()
    print(server.port, flush=True)
    for _line in sys.stdin:  # each line asks for the count so far; EOF stops the server
        print(server.received, flush=True)
    server.stop()


if __name__ == "__main__":
    main()
