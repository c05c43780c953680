"""The emulator over real HTTP, for the example project, benchmarks and any
test that must cross a socket (timeouts, dropped connections, retries)."""

from __future__ import annotations

import json
import logging
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .core import Emulator, Response
from .wire import error_response

logger = logging.getLogger("autumn_django.emulator")

#: Not an Autumn route: GET it for the emulator's counters (see Emulator.stats).
STATS_PATH = "/_emulator/stats"
#: The largest request body read (Autumn's requests are a few KB).
MAX_BODY = 10 * 1024 * 1024


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a pooled client expects
    server_version = "autumn-emulator"
    server: EmulatorServer
    # Headers and body leave in one write (flushed after each request), and
    # Nagle is off: otherwise each answer waits on a delayed ACK (~40 ms).
    wbufsize = 64 * 1024
    disable_nagle_algorithm = True

    def _serve(self) -> None:
        length = self.headers.get("Content-Length") or "0"
        if not length.isdecimal() or int(length) > MAX_BODY:
            self.send_error(413 if length.isdecimal() else 400)
            return
        body = self.rfile.read(int(length)) if int(length) else b""
        if self.path == STATS_PATH:  # the emulator's own counters, for benchmarks
            response = Response(200, json.dumps(self.server.emulator.stats()).encode())
        else:
            try:
                response = self.server.emulator.handle(self.command, self.path, dict(self.headers), body)
            except Exception:  # a bug of ours: answer as Autumn's would, and keep serving
                logger.exception("The emulator failed on %s %s", self.command, self.path)
                response = error_response(500, "internal_error", "Internal server error", "sandbox")
        if response.drop:
            # Close without a byte of answer: what a crashed proxy looks like.
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        self.wfile.write(response.body)

    do_POST = do_GET = do_PUT = do_PATCH = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the emulator keeps its own request log


class EmulatorServer(ThreadingHTTPServer):
    """A threaded HTTP server around an :class:`Emulator`."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, emulator: Emulator, host: str = "127.0.0.1", port: int = 0) -> None:
        self.emulator = emulator
        super().__init__((host, port), _Handler)
        self._thread: threading.Thread | None = None

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (a timeout in a test) closes mid-answer: normal.
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> EmulatorServer:
        """Serve from a background thread; returns at once."""
        self._thread = threading.Thread(target=self.serve_forever, name="autumn-emulator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self.emulator.close()

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
