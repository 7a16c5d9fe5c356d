"""A small recording, fault-injecting HTTP/1.1 proxy for tests (standard library only).

Tests point the tool's endpoint (--url) at `Proxy.endpoint_url`; every request is forwarded
to one target endpoint and recorded (method, path, query, headers). With `Faults` set, a
seeded share of requests is answered with 500, 503 or an S3 `SlowDown`, or has its
connection reset: either before forwarding ("drop") or after forwarding, partway through
the answer ("cut": the server did the work but the client never hears it all).

Bodies pass through byte for byte, including `Transfer-Encoding: chunked` (aws-chunked)
framing, and are streamed in 64 KiB pieces, so memory stays bounded for large objects. The
Host header is kept as the client sent it, because SigV4 signs it.
"""

from __future__ import annotations

import contextlib
import http.client
import random
import socket
import struct
import threading
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

__all__ = ["FAULT_KINDS", "Faults", "Proxy", "Recorded"]

PIECE = 64 * 1024
# Connection-level headers that describe one hop, not the message: never forwarded.
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "proxy-authorization", "te", "upgrade"}
)
# What a fault can be; recorded in `Recorded.fault`.
FAULT_KINDS = ("500", "503", "SlowDown", "drop", "cut")
_ERRORS = {
    "500": (500, "InternalError", "We encountered an internal error. Please try again."),
    "503": (503, "ServiceUnavailable", "Service is unable to handle request."),
    "SlowDown": (503, "SlowDown", "Please reduce your request rate."),
}


@dataclass
class Faults:
    """Which faults to inject: shares of requests (0..1) answered with an error or reset.

    Only requests whose method is in `methods` are touched; at most `max_faults` faults are
    injected (None: no limit); the same seed gives the same sequence of decisions.
    """

    error_rate: float = 0.0
    reset_rate: float = 0.0
    methods: frozenset[str] = frozenset({"GET", "PUT", "HEAD", "DELETE", "POST"})
    max_faults: int | None = None
    seed: int = 0


class _Headers(dict[str, str]):
    """Header names folded to lower case; lookups ignore case, as HTTP does."""

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and super().__contains__(key.lower())

    def get(self, key: str, default: str | None = None) -> str | None:  # type: ignore[override]
        return super().get(key.lower(), default)


@dataclass(frozen=True)
class Recorded:
    """One request as the proxy received it. `headers` keys are lower case, lookups
    ignore case; `fault` is "" or the fault injected (one of FAULT_KINDS)."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    fault: str = ""


class _State:
    """Recordings and fault decisions, shared by the handler threads under one lock."""

    def __init__(self, faults: Faults | None) -> None:
        self.lock = threading.Lock()
        self.recorded: list[Recorded] = []
        self.injected = 0
        self.set_faults(faults)

    def set_faults(self, faults: Faults | None) -> None:
        with self.lock:
            self.faults = faults
            self.rng = random.Random(faults.seed if faults else 0)
            self.injected_this_config = 0

    def decide(self, method: str) -> str:
        """The fault for the next request ("" for none), drawn from the seeded generator."""
        with self.lock:
            faults = self.faults
            if faults is None or method not in faults.methods:
                return ""
            if faults.max_faults is not None and self.injected_this_config >= faults.max_faults:
                return ""
            draw = self.rng.random()
            if draw < faults.error_rate:
                kind = self.rng.choice(("500", "503", "SlowDown"))
            elif draw < faults.error_rate + faults.reset_rate:
                kind = self.rng.choice(("drop", "cut"))
            else:
                return ""
            self.injected += 1
            self.injected_this_config += 1
            return kind

    def record(self, entry: Recorded) -> None:
        with self.lock:
            self.recorded.append(entry)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # A tool opening 8-16 connections at once must not overflow the listen backlog (the
    # default 5 would drop SYNs and add 1 s retransmission stalls).
    request_queue_size = 128

    def __init__(self, target: tuple[str, int], state: _State) -> None:
        self.target = target
        self.state = state
        # Each open client connection and the thread serving it, so stop() can end both.
        self.connections: dict[socket.socket, threading.Thread] = {}
        self.connections_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)

    def process_request_thread(self, request: socket.socket, client_address: object) -> None:  # type: ignore[override]
        with self.connections_lock:
            self.connections[request] = threading.current_thread()
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self.connections_lock:
                self.connections.pop(request, None)

    def end_connections(self, timeout: float) -> None:
        """Shut every open client connection down and wait for the threads serving them."""
        with self.connections_lock:
            connections = list(self.connections.items())
        for sock, _ in connections:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for _, thread in connections:
            thread.join(timeout)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as boto3's connection pool expects
    timeout = 60  # an idle keep-alive connection ends after this, so threads never pile up
    # Small writes (headers, then body) must not wait for delayed ACKs: 40 ms per request.
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet: tests read `Proxy.requests` instead

    def _handle(self) -> None:
        try:
            self._serve_one()
        except (OSError, ValueError, http.client.HTTPException):
            # The client went away, sent garbage, or a reset was injected: end this
            # connection quietly, as a server would.
            self.close_connection = True

    def _serve_one(self) -> None:
        parts = urllib.parse.urlsplit(self.path)
        headers = _Headers((name.lower(), value) for name, value in self.headers.items())
        kind = self.server.state.decide(self.command)
        self.server.state.record(Recorded(self.command, parts.path, parts.query, headers, kind))
        if kind in _ERRORS:
            self._skip_body()
            self._answer_error(kind)
        elif kind == "drop":
            self._skip_body()
            self._reset()
        else:
            self._forward(cut=kind == "cut")

    do_GET = do_PUT = do_HEAD = do_DELETE = do_POST = do_OPTIONS = do_PATCH = _handle

    # -- request body -------------------------------------------------------------------

    def _copy_body(self, send: Callable[[bytes], None]) -> None:
        """Pass the request body through as received (Content-Length or chunked framing)."""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            self._copy_chunked(send)
            return
        remaining = int(self.headers.get("Content-Length") or 0)
        while remaining > 0:
            piece = self.rfile.read(min(PIECE, remaining))
            if not piece:
                raise ConnectionError("client closed the connection mid-body")
            send(piece)
            remaining -= len(piece)

    def _copy_chunked(self, send: Callable[[bytes], None]) -> None:
        while True:
            size_line = self.rfile.readline(1024)
            if not size_line.endswith(b"\n"):
                raise ConnectionError("bad chunk size line")
            send(size_line)
            size = int(size_line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                break
            remaining = size + 2  # the chunk and its CRLF
            while remaining > 0:
                piece = self.rfile.read(min(PIECE, remaining))
                if not piece:
                    raise ConnectionError("client closed the connection mid-chunk")
                send(piece)
                remaining -= len(piece)
        for _ in range(1000):  # trailers (aws-chunked checksums), then an empty line
            line = self.rfile.readline(8192)
            send(line)
            if line in (b"\r\n", b"\n", b""):
                return
        raise ConnectionError("too many trailer lines")

    def _skip_body(self) -> None:
        self._copy_body(lambda piece: None)

    # -- answers ------------------------------------------------------------------------

    def _answer_error(self, kind: str) -> None:
        status, code, message = _ERRORS[kind]
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{code}</Code><Message>{message}</Message>"
            f"<RequestId>proxy-fault</RequestId></Error>"
        ).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _reset(self) -> None:
        """Abort the connection with a TCP RST: no answer, or the answer cut short."""
        self.wfile.flush()
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        self.connection.close()

    def _forward(self, *, cut: bool) -> None:
        host, port = self.server.target
        upstream = http.client.HTTPConnection(host, port, timeout=60)
        try:
            try:
                upstream.connect()
                assert upstream.sock is not None
                upstream.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._send_upstream(upstream)
                response = upstream.getresponse()
            except (OSError, http.client.HTTPException):
                # The client's request may be unreadable now: answer and close.
                self.close_connection = True
                self.send_error(502, "upstream unreachable")
                return
            self._relay(response, cut=cut)
        finally:
            upstream.close()

    def _send_upstream(self, upstream: http.client.HTTPConnection) -> None:
        upstream.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
        for name, value in self.headers.items():
            # Expect was answered here already (the handler sent "100 Continue").
            if name.lower() not in HOP_BY_HOP and name.lower() != "expect":
                upstream.putheader(name, value)
        upstream.endheaders()
        self._copy_body(upstream.send)

    def _relay(self, response: http.client.HTTPResponse, *, cut: bool) -> None:
        length_header = response.getheader("Content-Length")
        no_body = self.command == "HEAD" or response.status in (204, 304)
        length = int(length_header) if length_header is not None and not no_body else None
        if cut and (no_body or length == 0):
            self._reset()  # the work was done upstream; the answer is lost
            return
        lines = [f"HTTP/1.1 {response.status} {response.reason}"]
        lines += [
            f"{name}: {value}"
            for name, value in response.getheaders()
            if name.lower() not in HOP_BY_HOP and name.lower() != "transfer-encoding"
        ]
        chunked = not no_body and length is None
        if chunked:
            lines.append("Transfer-Encoding: chunked")
        self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        if no_body:
            return
        limit = None if not cut else (length // 2 if length is not None else PIECE)
        sent = 0
        while True:
            piece = response.read(PIECE if limit is None else min(PIECE, limit - sent))
            if not piece:
                break
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
            sent += len(piece)
            if limit is not None and sent >= limit:
                self._reset()
                return
        if cut:
            self._reset()
            return
        if chunked:
            self.wfile.write(b"0\r\n\r\n")


class Proxy:
    """A proxy on 127.0.0.1 forwarding to `target_endpoint_url`; a context manager."""

    def __init__(self, target_endpoint_url: str, faults: Faults | None = None) -> None:
        target = urllib.parse.urlsplit(target_endpoint_url)
        if target.scheme != "http" or target.hostname is None:
            raise ValueError(f"proxy target must be an http:// URL: {target_endpoint_url}")
        self._state = _State(faults)
        self._server = _Server((target.hostname, target.port or 80), self._state)
        port = self._server.server_address[1]
        self.endpoint_url = f"http://127.0.0.1:{port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        self._thread.start()
        self._stopped = False

    @property
    def requests(self) -> list[Recorded]:
        """A snapshot of the requests received so far, in arrival order."""
        with self._state.lock:
            return list(self._state.recorded)

    @property
    def faults_injected(self) -> int:
        """How many faults were injected since the start or the last clear()."""
        with self._state.lock:
            return self._state.injected

    def set_faults(self, faults: Faults | None) -> None:
        """Replace the fault settings (None: forward everything); reseeds the generator."""
        self._state.set_faults(faults)

    def clear(self) -> None:
        """Forget the recorded requests and the fault count."""
        with self._state.lock:
            self._state.recorded.clear()
            self._state.injected = 0

    def stop(self) -> None:
        """Stop listening, cut open connections and wait for the handler threads."""
        if self._stopped:
            return
        self._stopped = True
        self._server.shutdown()
        self._server.end_connections(timeout=10)
        self._server.server_close()
        self._thread.join(timeout=10)

    def __enter__(self) -> Proxy:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
