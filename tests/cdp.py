"""A real headless Chromium, driven over the Chrome DevTools Protocol, to check an HTML page as a person sees it.

:func:`inspect_page` opens a URL and reports console errors, uncaught exceptions, failed loads, images
that did not decode, the values of JavaScript checks, and a screenshot. Chromium is Debian's
``chromium`` package (``make test`` installs it when it can).
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import signal
import shutil
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0"]

BROKEN_IMAGES_JS = ("Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0))"
                    ".map(i => i.alt || i.src.slice(0, 80))")


def find_chromium() -> str | None:
    """Path of a Chromium binary, or None."""
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


@dataclass
class PageReport:
    errors: list[str] = field(default_factory=list)  # console errors, exceptions, failed loads
    broken_images: list[str] = field(default_factory=list)
    n_images: int = 0
    checks: dict = field(default_factory=dict)  # name → value of its JavaScript expression


class _Session:
    """One DevTools websocket: commands get their answers; events are kept in order."""

    def __init__(self, url: str, timeout: float) -> None:
        import websocket

        self.ws = websocket.create_connection(url, timeout=timeout, suppress_origin=True)
        self.ids = itertools.count(1)
        self.events: list[dict] = []

    def send(self, method: str, **params) -> dict:
        msg_id = next(self.ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    def wait_for(self, method: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == method for e in self.events):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {method} within {timeout} s")
            self.events.append(json.loads(self.ws.recv()))

    def evaluate(self, expression: str):
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")


def _errors(events: list[dict]) -> list[str]:
    out = []
    for e in events:
        m, p = e.get("method"), e.get("params", {})
        if m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            out.append("console: " + " ".join(str(a.get("value", a.get("description", ""))) for a in p["args"]))
        elif m == "Runtime.exceptionThrown":
            d = p["exceptionDetails"]
            out.append("exception: " + d.get("exception", {}).get("description", d.get("text", "")))
        elif m == "Log.entryAdded" and p["entry"]["level"] == "error":
            out.append(f"log ({p['entry']['source']}): {p['entry']['text']} {p['entry'].get('url', '')[:80]}")
    return out


def inspect_page(url: str, checks: dict[str, str] | None = None, screenshot: Path | None = None,
                 width: int = 1280, max_height: int = 8000, timeout: float = 90) -> PageReport:
    """Open ``url`` in headless Chromium and report what went wrong; optionally save a PNG screenshot."""
    binary = find_chromium()
    if binary is None:
        raise FileNotFoundError("chromium is not installed")
    # Chromium's helper processes (zygote, renderers, crashpad) outlive its main process for a moment
    # and keep writing into the profile: run it in its own session and end the whole group.
    with tempfile.TemporaryDirectory(prefix="tessera-chromium-") as profile:
        log = open(Path(profile) / "chromium.log", "wb")
        proc = subprocess.Popen([binary, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},900",
                                 "about:blank"], stdout=log, stderr=log, start_new_session=True)
        try:
            port_file, deadline = Path(profile) / "DevToolsActivePort", time.monotonic() + timeout
            while not (port_file.exists() and port_file.read_text().strip()):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"chromium did not start: {(Path(profile) / 'chromium.log').read_text()[-2000:]}")
                time.sleep(0.1)
            port = int(port_file.read_text().split()[0])
            targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=timeout))
            page = next(t for t in targets if t["type"] == "page")
            s = _Session(page["webSocketDebuggerUrl"], timeout)
            for domain in ("Runtime", "Log", "Page"):
                s.send(f"{domain}.enable")
            s.send("Emulation.setDeviceMetricsOverride", width=width, height=900, deviceScaleFactor=1, mobile=False)
            s.events.clear()
            s.send("Page.navigate", url=url)
            s.wait_for("Page.loadEventFired", timeout)
            report = PageReport(n_images=s.evaluate("document.images.length"),
                                broken_images=s.evaluate(BROKEN_IMAGES_JS))
            report.checks = {name: s.evaluate(js) for name, js in (checks or {}).items()}
            if screenshot is not None:
                height = min(int(s.evaluate("document.documentElement.scrollHeight")), max_height)
                shot = s.send("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                              clip={"x": 0, "y": 0, "width": width, "height": height, "scale": 1})
                screenshot.parent.mkdir(parents=True, exist_ok=True)
                screenshot.write_bytes(base64.b64decode(shot["data"]))
            time.sleep(0.2)  # let late console messages arrive
            s.ws.settimeout(0.5)
            try:
                while True:
                    s.events.append(json.loads(s.ws.recv()))
            except Exception:  # the socket's timeout ends the drain
                pass
            report.errors = _errors(s.events)
            s.ws.close()
            return report
        finally:
            _end_group(proc)
            log.close()


def _end_group(proc: subprocess.Popen) -> None:
    """SIGTERM Chromium's process group, SIGKILL what is left, and wait until every member is gone."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            continue
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the group outlives its leader until the helpers exit
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
