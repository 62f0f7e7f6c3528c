"""Headless Chromium (Debian's `chromium`) driven over the DevTools protocol, for tests that look at a page.

    with HeadlessChromium(tmp_path / "profile") as browser:
        browser.open(url, login=("user", "password"))       # answers the Basic auth challenge
        assert browser.wait_for_text(["some text"], timeout_s=15)
        browser.screenshot(tmp_path / "page.png")

The browser signs in the way a person does: it gets the 401 challenge and the DevTools `Fetch`
domain answers it with the credentials (no header injection). Started with a throwaway profile
and no network services of its own; stopped by PID (its whole process group).
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import subprocess
from pathlib import Path
from types import TracebackType
from typing import Any, Final

import requests
from tornado.websocket import WebSocketClientConnection, websocket_connect

from embedded.child_stop import stop_child
from testing.waiting import wait_until

__all__ = ["CHROMIUM_MISSING", "HeadlessChromium", "find_chromium"]

CHROMIUM_MISSING: Final = "chromium is not installed (Debian: apt-get install -y chromium)"
_CANDIDATES: Final = ("chromium", "chromium-browser")
_START_TIMEOUT_S: Final = 30.0
_CALL_TIMEOUT_S: Final = 30.0
_WINDOW: Final = "1600,1000"


def find_chromium() -> str | None:
    for name in _CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


class HeadlessChromium:
    def __init__(self, profile_dir: Path) -> None:
        self.profile_dir = profile_dir
        self.process: subprocess.Popen[bytes] | None = None
        self._loop = asyncio.new_event_loop()
        self._socket: WebSocketClientConnection | None = None
        self._next_id = 0
        self._login: tuple[str, str] | None = None
        self.auth_challenges = 0

    def start(self) -> HeadlessChromium:
        binary = find_chromium()
        if binary is None:
            raise RuntimeError(CHROMIUM_MISSING)
        self.profile_dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                binary,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--hide-scrollbars",
                f"--window-size={_WINDOW}",
                f"--user-data-dir={self.profile_dir}",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",  # Chromium writes the port it chose to DevToolsActivePort
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        port_file = self.profile_dir / "DevToolsActivePort"
        if not wait_until(
            lambda: port_file.exists() and port_file.read_text().strip() != "", timeout_s=_START_TIMEOUT_S
        ):
            self.stop()
            raise RuntimeError("chromium did not open its DevTools port")
        port = int(port_file.read_text().split()[0])
        pages = [t for t in requests.get(f"http://127.0.0.1:{port}/json/list", timeout=5).json() if t["type"] == "page"]
        self._socket = self._run(self._connect(pages[0]["webSocketDebuggerUrl"]))
        return self

    async def _connect(self, url: str) -> WebSocketClientConnection:
        # Created inside our loop (tornado binds the connection to the loop it starts on).
        return await websocket_connect(url, max_message_size=64 * 1024 * 1024)

    def _run(self, awaitable: Any) -> Any:
        return self._loop.run_until_complete(asyncio.wait_for(awaitable, _CALL_TIMEOUT_S))

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """One DevTools command; events that arrive meanwhile are handled (auth, paused requests)."""
        return dict(self._run(self._call(method, params)))

    async def _call(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        assert self._socket is not None
        self._next_id += 1
        call_id = self._next_id
        await self._socket.write_message(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            raw = await self._socket.read_message()
            if raw is None:
                raise RuntimeError("chromium closed the DevTools connection")
            message = json.loads(raw)
            if message.get("id") == call_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result
            await self._on_event(message)

    async def _on_event(self, message: dict[str, Any]) -> None:
        assert self._socket is not None
        method, params = message.get("method"), message.get("params", {})
        reply: dict[str, Any] | None = None
        if method == "Fetch.requestPaused":
            reply = {"method": "Fetch.continueRequest", "params": {"requestId": params["requestId"]}}
        elif method == "Fetch.authRequired":
            self.auth_challenges += 1
            answer: dict[str, Any] = {"response": "CancelAuth"}
            if self._login is not None:
                answer = {"response": "ProvideCredentials", "username": self._login[0], "password": self._login[1]}
            reply = {
                "method": "Fetch.continueWithAuth",
                "params": {"requestId": params["requestId"], "authChallengeResponse": answer},
            }
        if reply is not None:
            self._next_id += 1
            await self._socket.write_message(json.dumps({"id": self._next_id, **reply}))

    def open(self, url: str, *, login: tuple[str, str] | None = None) -> None:
        """Navigate; a Basic challenge is answered with `login` (cancelled without one)."""
        self._login = login
        self.call("Fetch.enable", handleAuthRequests=True, patterns=[{"urlPattern": "*"}])
        self.call("Page.enable")
        self.call("Page.navigate", url=url)

    def text(self) -> str:
        result = self.call("Runtime.evaluate", expression="document.body ? document.body.innerText : ''")
        return str(result.get("result", {}).get("value", ""))

    def wait_for_text(self, needles: list[str], *, timeout_s: float) -> bool:
        return wait_until(lambda: all(n in self.text() for n in needles), timeout_s=timeout_s, poll_s=0.25)

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def stop(self) -> None:
        try:
            if self._socket is not None:
                # Closed inside our loop: outside it tornado looks for the thread's current loop,
                # which there is none of once anything in the process has used asyncio.run().
                self._run(self._close_socket(self._socket))
                self._socket = None
        finally:
            if self.process is not None:
                stop_child(self.process, grace_s=10, group=True)
            self._loop.close()

    @staticmethod
    async def _close_socket(socket: WebSocketClientConnection) -> None:
        socket.close()

    def __enter__(self) -> HeadlessChromium:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
