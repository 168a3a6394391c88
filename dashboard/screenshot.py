"""Open a run's Visdom environment in headless Chromium, check that it rendered, save a screenshot.

usage: python dashboard/screenshot.py ENV PORT OUT.png

Drives Chromium through the DevTools protocol over websocket-client (already a visdom
dependency), so no browser driver is needed. Exits 1 when a plot did not render or a request
failed or left the dashboard's host. tests/test_dashboard.py uses open_dashboard() too.
"""
import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import websocket

# Headless, and nothing that phones home: an offline machine must not wait on any of it.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio"]
# What the page shows: Plotly figures that drew their SVG, traces inside them, loaded images.
PAGE_STATE = """(() => {
  const plots = [...document.querySelectorAll('.js-plotly-plot')].filter(p => p.querySelector('svg.main-svg'));
  return {ready: document.readyState,
          plots: plots.length,
          traces: document.querySelectorAll('.js-plotly-plot .trace').length,
          images: [...document.querySelectorAll('img')].filter(i => i.complete && i.naturalWidth > 0).length,
          height: Math.max(document.documentElement.scrollHeight,
                           ...[...document.querySelectorAll('.react-grid-item')].map(
                               e => e.getBoundingClientRect().bottom + window.scrollY + 10))};
})()"""


@dataclass
class PageReport:
    """What a browser saw when opening a dashboard page."""
    plots: int = 0
    traces: int = 0
    images: int = 0
    failed: list = field(default_factory=list)    # "URL (reason)": network errors and HTTP >= 400
    external: list = field(default_factory=list)  # requests to another host than the dashboard's
    png: bytes = b""


def find_chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    raise FileNotFoundError("no Chromium found (Debian: apt-get install chromium)")


class DevTools:
    """A DevTools protocol session with one browser tab; keeps the events it receives."""

    def __init__(self, ws_url: str, timeout_s: float):
        self.ws = websocket.create_connection(ws_url, timeout=timeout_s, suppress_origin=True)
        self.events, self.last_id = [], 0

    def call(self, method: str, **params) -> dict:
        self.last_id += 1
        self.ws.send(json.dumps({"id": self.last_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self.last_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def evaluate(self, expression: str):
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")


@contextlib.contextmanager
def chromium_tab(timeout_s: float = 30):
    """Start a throwaway headless Chromium and yield a DevTools session with its tab."""
    with tempfile.TemporaryDirectory(prefix="chromium-", ignore_cleanup_errors=True) as profile:
        process = subprocess.Popen([find_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                                    "--remote-debugging-port=0", "about:blank"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            port_file, deadline = Path(profile) / "DevToolsActivePort", time.monotonic() + timeout_s
            while not (port_file.is_file() and len(port_file.read_text().splitlines()) >= 2):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"Chromium did not start (exit code {process.poll()})")
                time.sleep(0.1)
            port = int(port_file.read_text().splitlines()[0])
            no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))
            targets = json.loads(no_proxy.open(f"http://127.0.0.1:{port}/json/list", timeout=timeout_s).read())
            tab = DevTools(next(t for t in targets if t["type"] == "page")["webSocketDebuggerUrl"], timeout_s)
            try:
                yield tab
            finally:
                with contextlib.suppress(Exception):
                    tab.call("Browser.close")  # closes its helper processes too
                tab.ws.close()
        finally:
            _stop(process)


def _stop(process: subprocess.Popen) -> None:
    """End a Chromium we started, and the helper processes in its session."""
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # its own session: only what this Chromium started
    process.wait()


def open_dashboard(url: str, plots: int, images: int = 0, timeout_s: float = 30,
                   width: int = 1600, screenshot: bool = False) -> PageReport:
    """Load `url`, wait until `plots` Plotly figures and `images` images are drawn, report."""
    report = PageReport()
    with chromium_tab(timeout_s) as tab:
        tab.call("Network.enable")
        tab.call("Page.enable")
        tab.call("Emulation.setDeviceMetricsOverride", width=width, height=1000, deviceScaleFactor=1, mobile=False)
        tab.call("Page.navigate", url=url)
        deadline, state = time.monotonic() + timeout_s, {}
        while time.monotonic() < deadline:
            state = tab.evaluate(PAGE_STATE) or {}
            if state.get("ready") == "complete" and state["plots"] >= plots and state["images"] >= images:
                break
            time.sleep(0.25)
        time.sleep(1.0)  # let requests started by the last draw finish before reading the log
        state = tab.evaluate(PAGE_STATE) or state
        report.plots, report.traces, report.images = (state.get(k, 0) for k in ("plots", "traces", "images"))
        report.failed, report.external = _request_problems(tab.events, url)
        if screenshot:
            tab.call("Emulation.setDeviceMetricsOverride", width=width, height=int(state.get("height", 1000)),
                     deviceScaleFactor=1, mobile=False)
            time.sleep(0.5)  # Plotly redraws on resize
            report.png = base64.b64decode(tab.call("Page.captureScreenshot", format="png")["data"])
    return report


def _request_problems(events: list, page_url: str) -> tuple[list, list]:
    """(failed requests, requests to other hosts) in a DevTools Network event log."""
    home = urllib.parse.urlsplit(page_url).netloc
    urls, failed, external = {}, [], []
    for event in events:
        params = event.get("params", {})
        if event.get("method") == "Network.requestWillBeSent":
            url = params["request"]["url"]
            urls[params["requestId"]] = url
            if urllib.parse.urlsplit(url).scheme in ("http", "https", "ws", "wss") \
                    and urllib.parse.urlsplit(url).netloc != home:
                external.append(url)
        elif event.get("method") == "Network.responseReceived" and params["response"]["status"] >= 400:
            failed.append(f"{params['response']['url']} (HTTP {params['response']['status']})")
        elif event.get("method") == "Network.loadingFailed":
            failed.append(f"{urls.get(params['requestId'], '?')} ({params.get('errorText', 'failed')})")
    return failed, external


def main(argv: list) -> int:
    if len(argv) != 3:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    env, port, out = argv
    url = f"http://localhost:{int(port)}/env/{urllib.parse.quote(env)}"
    report = open_dashboard(url, plots=1, screenshot=True)
    Path(out).write_bytes(report.png)
    print(f"{url}: {report.plots} plots, {report.traces} traces, {report.images} images -> {out}")
    for problem in report.failed + [f"{u} (not this host)" for u in report.external]:
        print(f"  request problem: {problem}")
    return 0 if report.plots and not report.failed and not report.external else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
