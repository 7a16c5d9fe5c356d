"""A small instance metadata service on 127.0.0.1 for the inheritance tests.

``token_required``: IMDSv2 only (GETs without a valid token get 401, as on an
instance with HttpTokens=required). ``v1_only``: no token API (the PUT gets
405, as on old instances or some emulators).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOKEN = "test-token-AQAEAB"

DEFAULT_DATA: Mapping[str, str] = {
    "kernel-id": "aki-11111111",
    "ramdisk-id": "ari-22222222",
    "product-codes": "PC11111\nPC22222",
    "block-device-mapping/": "ami\nroot\nephemeral0\nswap",
    "block-device-mapping/ami": "sda1",
    "block-device-mapping/root": "/dev/sda1",
    "block-device-mapping/ephemeral0": "sdb",
    "block-device-mapping/swap": "sda3",
    "ancestor-ami-ids": "ami-00000001\nami-00000002",
    "ami-id": "ami-12345678",
}


class Server:
    def __init__(self, data: Mapping[str, str], *, v1_only: bool) -> None:
        self.data = dict(data)
        self.v1_only = v1_only
        self.requests: list[tuple[str, str, str | None]] = []  # method, path, token
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def _send(self, status: int, body: str = "") -> None:
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_PUT(self) -> None:
                outer.requests.append(("PUT", self.path, None))
                if outer.v1_only:
                    return self._send(405)
                if self.path != "/latest/api/token":
                    return self._send(404)
                if not self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
                    return self._send(400)
                return self._send(200, TOKEN)

            def do_GET(self) -> None:
                token = self.headers.get("X-aws-ec2-metadata-token")
                outer.requests.append(("GET", self.path, token))
                if not outer.v1_only and token != TOKEN:
                    return self._send(401)
                prefix = "/latest/meta-data/"
                if not self.path.startswith(prefix):
                    return self._send(404)
                key = self.path[len(prefix) :]
                if key == "":
                    return self._send(200, "ami-id\nkernel-id\n")
                if key not in outer.data:
                    return self._send(404)
                return self._send(200, outer.data[key])

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.httpd.server_address[1]}"


@contextmanager
def imds(data: Mapping[str, str] = DEFAULT_DATA, *, v1_only: bool = False) -> Iterator[Server]:
    server = Server(data, v1_only=v1_only)
    thread = threading.Thread(target=server.httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()


def closed_port_endpoint() -> str:
    """An endpoint on 127.0.0.1 where nothing listens."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"
