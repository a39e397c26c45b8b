"""Headless Chromium driven over the Chrome DevTools Protocol (dev and test tool, not deployed).

Uses the system `chromium` (Debian package; `make test` installs it) and websocket-client: no browser
download, no driver binary. Enough for the review page's browser test and the README screenshots:
navigate, evaluate JavaScript, click an element with real mouse events, take a full-page PNG.

    python -m devhost.browser screenshot URL OUT.png
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--window-size=1000,1200",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
)
CANDIDATES = ("chromium", "chromium-browser")


class BrowserError(RuntimeError):
    pass


def chromium_binary() -> str:
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    raise BrowserError(
        "no `chromium` on PATH: install the Debian package (`apt-get install -y chromium`; `make test` does it)"
    )


class Chromium:
    """One headless Chromium with a fresh profile and one page. Use as a context manager."""

    def __init__(self, timeout: float = 30.0) -> None:
        self.timeout = timeout
        self._profile = Path(tempfile.mkdtemp(prefix="valueflow-chromium-"))
        self._proc: subprocess.Popen[bytes] | None = None
        self._ws: Any = None
        self._next_id = 0
        self._events: list[dict[str, Any]] = []

    def __enter__(self) -> Chromium:
        import websocket  # websocket-client, a dev dependency

        binary = chromium_binary()
        log = open(self._profile / "chromium.log", "wb")  # noqa: SIM115 - the child writes to it
        self._proc = subprocess.Popen(
            [binary, *FLAGS, f"--user-data-dir={self._profile}", "about:blank"], stdout=log, stderr=log
        )
        port_file = self._profile / "DevToolsActivePort"
        deadline = time.monotonic() + self.timeout
        while not (port_file.is_file() and port_file.read_text().strip()):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                tail = (self._profile / "chromium.log").read_text(errors="replace")[-1500:]
                self.close()
                raise BrowserError(f"chromium did not start (exit {self._proc.returncode}): {tail}")
            time.sleep(0.05)
        port = int(port_file.read_text().splitlines()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=self.timeout) as resp:
            targets = json.loads(resp.read())
        page = next(t for t in targets if t.get("type") == "page")
        self._ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=self.timeout, suppress_origin=True)
        self.send("Page.enable")
        self.send("Runtime.enable")
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._ws is not None:
            try:
                self._ws.close()
            except Exception:  # noqa: BLE001 - closing a dead socket
                pass
            self._ws = None
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=5)
        shutil.rmtree(self._profile, ignore_errors=True)

    # -- protocol --

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one command and return its result (events that arrive meanwhile are kept)."""
        self._next_id += 1
        my_id = self._next_id
        self._ws.send(json.dumps({"id": my_id, "method": method, "params": params}))
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            message = json.loads(self._ws.recv())
            if message.get("id") == my_id:
                if "error" in message:
                    raise BrowserError(f"{method}: {message['error'].get('message')}")
                return dict(message.get("result") or {})
            if "method" in message:
                self._events.append(message)
        raise BrowserError(f"{method}: no answer within {self.timeout:.0f}s")

    def wait_event(self, method: str) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            for i, event in enumerate(self._events):
                if event["method"] == method:
                    return dict(self._events.pop(i).get("params") or {})
            message = json.loads(self._ws.recv())
            if "method" in message:
                self._events.append(message)
        raise BrowserError(f"no {method} within {self.timeout:.0f}s")

    # -- what a test does --

    def goto(self, url: str) -> None:
        self._events.clear()
        result = self.send("Page.navigate", url=url)
        if result.get("errorText"):
            raise BrowserError(f"cannot open {url}: {result['errorText']}")
        self.wait_event("Page.loadEventFired")

    def evaluate(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression!r} threw: {result['exceptionDetails'].get('text')}")
        return result.get("result", {}).get("value")

    def click(self, selector: str, *, navigates: bool = False) -> None:
        """Click the centre of the element with real mouse events (as a person would)."""
        box = self.evaluate(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)}); if (!e) return null;"
            " e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect();"
            " return {x: r.left + r.width / 2, y: r.top + r.height / 2}; })()"
        )
        if box is None:
            raise BrowserError(f"nothing matches {selector!r} on the page")
        self._events.clear()
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            extra = {"button": "left", "clickCount": 1} if kind != "mouseMoved" else {}
            self.send("Input.dispatchMouseEvent", type=kind, x=box["x"], y=box["y"], **extra)
        if navigates:
            self.wait_event("Page.loadEventFired")

    def fill(self, selector: str, text: str) -> None:
        self.evaluate(f"document.querySelector({json.dumps(selector)}).value = {json.dumps(text)}")

    def screenshot(self, path: Path, width: int = 1000) -> Path:
        height = int(self.evaluate("document.documentElement.scrollHeight") or 1200)
        self.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
        data = self.send("Page.captureScreenshot", format="png")["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] != "screenshot":
        print("usage: python -m devhost.browser screenshot URL OUT.png", file=sys.stderr)
        return 2
    try:
        with Chromium() as browser:
            browser.goto(argv[1])
            print(browser.screenshot(Path(argv[2])))
    except BrowserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
