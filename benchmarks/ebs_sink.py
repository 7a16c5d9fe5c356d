"""A minimal EBS direct-API server for bench-ebs: what a snapshot costs the client alone.

The strict stand-in of the test suite (moto plus tests/support/ebs_standin.py) spends
about 4.5 ms of CPU on every 512 KiB block, in Python, on the same two cores as the
command measured. This server makes the same checks at the cost of reading the body
and hashing it: StartSnapshot (BlockSize 524288), PutSnapshotBlock (the length, the
SHA-256 checksum, only while pending), CompleteSnapshot (the changed-block count and
the LINEAR aggregate); it keeps each block's digest, not its data. Nothing else of the
API is served, and signatures are not checked (neither does moto).

    python benchmarks/ebs_sink.py      # prints its endpoint URL, serves until stdin closes
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BLOCK = 524_288
_PUT = re.compile(r"/snapshots/(snap-[0-9a-f]+)/blocks/([0-9]+)")
_COMPLETE = re.compile(r"/snapshots/completion/(snap-[0-9a-f]+)")


class _State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.snapshots: dict[str, dict[int, bytes]] = {}
        self.completed: set[str] = set()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # no 40 ms delayed-ACK stall per answer
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _answer(self, status: int, body: dict[str, object]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        if status >= 400:
            self.send_header("x-amzn-ErrorType", "ValidationException")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_POST(self) -> None:
        body = self._body()
        state = self.server.state
        if self.path == "/snapshots":
            request = json.loads(body or b"{}")
            with state.lock:
                snapshot_id = f"snap-{len(state.snapshots) + 1:017x}"
                state.snapshots[snapshot_id] = {}
            self._answer(201, {"SnapshotId": snapshot_id, "BlockSize": BLOCK, "Status": "pending",
                               "VolumeSize": request.get("VolumeSize")})  # fmt: skip
            return
        match = _COMPLETE.fullmatch(self.path)
        if not match:
            self._answer(404, {"message": f"not served: POST {self.path}"})
            return
        with state.lock:
            digests = state.snapshots[match.group(1)]
            whole = hashlib.sha256(b"".join(digests[i] for i in sorted(digests))).digest()
            count = int(self.headers.get("x-amz-ChangedBlocksCount") or -1)
            if count != len(digests):
                self._answer(
                    400, {"message": f"ChangedBlocksCount {count}, {len(digests)} written"}
                )
                return
            if self.headers.get("x-amz-Checksum") != base64.b64encode(whole).decode():
                self._answer(400, {"message": "the aggregated checksum does not match"})
                return
            state.completed.add(match.group(1))
        self._answer(202, {"Status": "completed"})

    def do_PUT(self) -> None:
        data = self._body()
        match = _PUT.fullmatch(self.path)
        if not match:
            self._answer(404, {"message": f"not served: PUT {self.path}"})
            return
        digest = hashlib.sha256(data).digest()
        checksum = base64.b64encode(digest).decode()
        if len(data) != BLOCK or self.headers.get("x-amz-Checksum") != checksum:
            self._answer(400, {"message": "a block must be 524288 bytes with its SHA-256"})
            return
        state = self.server.state
        with state.lock:
            if match.group(1) in state.completed:
                self._answer(400, {"message": "the snapshot is not pending"})
                return
            state.snapshots[match.group(1)][int(match.group(2))] = digest
        self._answer(201, {"Checksum": checksum, "ChecksumAlgorithm": "SHA256"})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self) -> None:
        self.state = _State()
        super().__init__(("127.0.0.1", 0), _Handler)


def main() -> None:
    server = _Server()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"http://127.0.0.1:{server.server_address[1]}", flush=True)
    sys.stdin.read()
    server.shutdown()


if __name__ == "__main__":
    main()
