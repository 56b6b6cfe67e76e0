"""What every local stand-in server shares: start and stop, a context manager, a URL.

A stand-in binds 127.0.0.1 on a port the kernel picks, serves from a daemon thread, and
is either used as `with Fake() as fake: ...` or started and stopped by hand.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self


class LocalServer(ABC):
    """A server with start() and stop(), usable as a context manager."""

    @abstractmethod
    def start(self) -> Self: ...

    @abstractmethod
    def stop(self) -> None: ...

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class LocalHTTPServer(LocalServer):
    """A threaded HTTP server on 127.0.0.1 (an ephemeral port), served from a thread.

    Subclasses say how to answer with `handler_class()`; `url` is the base URL to give
    the code under test once the server has started.
    """

    thread_name = "local-http-server"
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    @abstractmethod
    def handler_class(self) -> type[BaseHTTPRequestHandler]: ...

    def start(self) -> Self:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self.handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},  # stop() returns within this
            name=self.thread_name,
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the stand-in first"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"
