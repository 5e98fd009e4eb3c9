"""Real browser: ``bench serve`` in a subprocess, Debian's chromium driven by playwright.

Every dashboard of the shipped metadata is loaded with filters that select data and with
a filter that selects nothing; the chart must be drawn (a ``.vega-embed`` canvas or svg)
and the data version must have clearly more coloured pixels (the marks: points, lines,
bars, heatmap cells) than the empty one (axes and frame only). Screenshots (PNG) go to
the pytest tmp dir and are copied to ``screenshots/`` in the repository (gitignored);
their paths are printed (``pytest -s`` or ``-rP`` shows them).

Skips, with the reason, when chromium (``/usr/bin/chromium``, or ``chromium`` on PATH) or
the ``playwright`` package is missing. Never ``playwright install``: CI installs Debian's
chromium in ``.ci/run``.
"""

from __future__ import annotations

import io
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

CHROMIUM = "/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else shutil.which("chromium")
if CHROMIUM is None:
    pytest.skip(
        "Debian's chromium is not installed (/usr/bin/chromium); .ci/run installs it with `apt-get install chromium`",
        allow_module_level=True,
    )
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
Image = pytest.importorskip("PIL.Image", reason="Pillow is not installed")

# tests/ is on sys.path under pytest's default import mode
from test_serve import build_fixture_db  # noqa: E402 - after the importorskip guards

LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
REPO = Path(__file__).resolve().parents[1]
NOTHING = {"suite": "no-such-suite"}  # every dashboard has a suite filter
DASHBOARDS = {  # slug -> filters that select data in the fixture database
    "accuracy-vs-step-time": {},
    "learning-curves": {"series_name": "train_loss_nat", "suite": "baselines"},
    "peak-memory": {},
    "series-heatmap": {"series_name": "kernel5_prob", "seed": "0"},
}
MIN_MARK_PIXELS = 400


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_responds(url: str, proc: subprocess.Popen, timeout_s: float = 90.0) -> None:
    """Poll ``url`` until it answers 200; fail with the server's output if it dies or never answers."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"bench serve exited with {proc.returncode}:\n{proc.stdout.read() if proc.stdout else ''}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    pytest.fail(f"bench serve did not answer {url} within {timeout_s:.0f} s")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    db = build_fixture_db(tmp_path_factory.mktemp("browser") / "results.db").path
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.cli.dispatch", "serve", str(db), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_responds(f"{base}/-/versions.json", proc)
        yield base
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        context = chromium.new_context(viewport={"width": 1280, "height": 900})  # one cache for the vega JS
        yield context
        context.close()
        chromium.close()


def coloured_pixels(png: bytes) -> int:
    """Pixels whose colour is saturated (marks), as opposed to white, grey or black (frame, axes, text)."""
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.int16)
    return int(((rgb.max(axis=2) - rgb.min(axis=2)) > 60).sum())


def render(browser: Any, url: str, min_pixels: int, screenshot: Path | None = None, poll_s: float = 30.0) -> int:
    """Load ``url``, wait for the vega chart, and return its coloured pixels as soon as at
    least ``min_pixels`` are drawn (after ``poll_s`` seconds, whatever is drawn)."""
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        page.goto(url)
        page.wait_for_selector(".vega-embed canvas, .vega-embed svg", timeout=60_000)
        chart = page.locator(".vega-embed").first
        deadline = time.monotonic() + poll_s
        count = coloured_pixels(chart.screenshot())
        while count < min_pixels and time.monotonic() < deadline:
            page.wait_for_timeout(200)
            count = coloured_pixels(chart.screenshot())
        page.wait_for_timeout(200)  # let an animation or a second pass finish before the screenshot
        count = max(count, coloured_pixels(chart.screenshot()))
        if screenshot is not None:
            page.screenshot(path=str(screenshot), full_page=True)
        assert not errors, f"JavaScript errors on {url}: {errors}"
        return count
    finally:
        page.close()


@pytest.mark.parametrize("slug", list(DASHBOARDS))
def test_dashboard_chart_is_drawn(server: str, browser: Any, slug: str, tmp_path: Path) -> None:
    from urllib.parse import urlencode

    shot = tmp_path / f"dashboard-{slug}.png"
    drawn = render(
        browser, f"{server}/-/dashboards/{slug}?{urlencode(DASHBOARDS[slug])}", MIN_MARK_PIXELS, screenshot=shot
    )
    empty = render(
        browser, f"{server}/-/dashboards/{slug}?{urlencode({**DASHBOARDS[slug], **NOTHING})}", 10**9, poll_s=0.4
    )
    copy = REPO / "screenshots" / shot.name
    copy.parent.mkdir(exist_ok=True)
    shutil.copyfile(shot, copy)
    with Image.open(shot) as image:
        size = image.size
    print(
        f"\nscreenshot of {slug}: {shot} (copy: {copy}), {size[0]}x{size[1]} px;"
        f" coloured chart pixels: {drawn} with data, {empty} without"
    )
    assert drawn - empty >= MIN_MARK_PIXELS, f"{slug}: chart looks blank ({drawn} vs {empty} coloured pixels)"
