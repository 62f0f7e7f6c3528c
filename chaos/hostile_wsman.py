"""A hostile WS-Man server (stdlib http.server): Basic auth over HTTP, answers from chaos.hostile_replies.

    POST /wsman             Basic auth checked like a WinRM listener (401 + challenge otherwise);
                            the reply is the current case's kind, drawn from (seed, case, attempt)
    POST /control/case/<n>  make case n current (its attempt counter restarts); no auth: it
                            listens on 127.0.0.1 only and drives a test, not a provider

The client under test is sequential: it names each case before its call, so an in-call retry
gets another reply of the same kind. Big replies go out chunked as they are generated.
"""

from __future__ import annotations

import base64
import http.server
import random
import re
import threading
from collections.abc import Sequence
from typing import Any, Final

from chaos.hostile_replies import Reply, WsmanCall, reply_for

__all__ = ["HostileWsmanServer"]

_MESSAGE_ID: Final = re.compile(rb"<(?:\w+:)?MessageID>([^<]{1,200})</(?:\w+:)?MessageID>")
_CONTROL: Final = re.compile(r"^/control/case/(\d{1,9})$")
_MAX_REQUEST_BYTES: Final = 1 << 20
_STOP_TIMEOUT_S: Final = 5.0


class _State:
    def __init__(self, kinds: Sequence[str], seed: int, credentials: bytes) -> None:
        self.kinds = list(kinds)
        self.seed = seed
        self.credentials = credentials
        self.lock = threading.Lock()
        self.case = 0
        self.attempt = 0
        self.served = 0

    def next_reply(self, call: WsmanCall) -> Reply:
        with self.lock:
            case, attempt = self.case, self.attempt
            self.attempt += 1
            self.served += 1
        kind = self.kinds[case % len(self.kinds)]
        return reply_for(kind, random.Random(f"{self.seed}:{case}:{attempt}"), call)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "Microsoft-HTTPAPI/2.0"
    sys_version = ""
    state: _State  # set on the subclass made per server

    def do_POST(self) -> None:
        control = _CONTROL.match(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        if length > _MAX_REQUEST_BYTES:
            self._send(Reply(413, "text/plain", [b"too large"]))
            self.close_connection = True
            return
        body = self.rfile.read(length)
        if control is not None:
            with self.state.lock:
                self.state.case, self.state.attempt = int(control.group(1)), 0
            self._send(Reply(204, "text/plain", []))
            return
        if self.path != "/wsman":
            self._send(Reply(404, "text/plain", [b"not found"]))
            return
        if self.headers.get("Authorization", "") != "Basic " + self.state.credentials.decode():
            self._send(Reply(401, "text/plain", []), extra={"WWW-Authenticate": 'Basic realm="WSMAN"'})
            return
        found = _MESSAGE_ID.search(body)
        call = WsmanCall(
            message_id=found.group(1).decode(errors="replace") if found else None,
            operation="invoke" if b"RefreshPkgSource" in body else "get",
        )
        self._send(self.state.next_reply(call))

    def _send(self, reply: Reply, *, extra: dict[str, str] | None = None) -> None:
        sized = isinstance(reply.chunks, list | tuple)
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        if sized:
            self.send_header("Content-Length", str(sum(len(chunk) for chunk in reply.chunks)))
        else:
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for chunk in reply.chunks:
                if not chunk:
                    continue
                self.wfile.write(chunk if sized else b"%x\r\n%s\r\n" % (len(chunk), chunk))
            if not sized:
                self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up on the reply: nothing to finish

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the scenario reports what matters."""


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up mid-reply is expected here, not an error worth a traceback."""


class HostileWsmanServer:
    """Start on 127.0.0.1 and a free port; `url` is the WS-Man endpoint, `control_url` the case switch."""

    def __init__(self, *, username: str, password: str, kinds: Sequence[str], seed: int) -> None:
        credentials = base64.b64encode(f"{username}:{password}".encode("latin-1"))
        self._state = _State(kinds, seed, credentials)
        handler = type("HostileHandler", (_Handler,), {"state": self._state})
        self._server = _Server(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="hostile-wsman", daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def url(self) -> str:
        return f"{self.base_url}/wsman"

    @property
    def control_url(self) -> str:
        return f"{self.base_url}/control/case/"

    @property
    def served(self) -> int:
        return self._state.served

    def start(self) -> HostileWsmanServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(_STOP_TIMEOUT_S)
