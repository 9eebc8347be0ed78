"""The status panel in a real browser: JupyterLab on 127.0.0.1 driven by Chromium.

JupyterLab runs in a subprocess with a token on a free loopback port and its own settings,
workspace and runtime folders; Debian's ``chromium`` (never a browser downloaded by
playwright) opens a notebook at 1280x800 that starts the ByBit simulator, opens a live trades
sink and shows ``hubkit.status_panel(trades)``. The test checks what a person sees: the
widget renders (not "Error displaying widget", not a text repr), the row count grows, every
column header and both buttons are inside the window, and Sync/Reconnect show their result.
``.ci/run`` installs ``chromium`` when it is missing.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import nbformat
import pytest
from kernel_helpers import kernel_env

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WIDTH, HEIGHT = 1280, 800
STARTUP_TIMEOUT = 120.0  # JupyterLab's first start on a busy machine builds nothing but is slow
WAIT_MS = 90_000  # per step; a loaded machine makes JupyterLab slow

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="needs Debian's chromium (.ci/run installs it)"
    ),
]

CELLS = (
    "import hubkit\n"
    "from hubkit import bybit\n"
    "from hubkit.testing import BybitSimulator\n"
    "\n"
    "sim = BybitSimulator(seed=5, trades_per_second=20).start()\n"
    "# the store is the default one, in the test's own HUBKIT_HOME\n"
    "trades = bybit.open_trades(['BTCUSDT', 'ETHUSDT'], rest_url=sim.rest_url, ws_url=sim.ws_url)",
    "hubkit.status_panel(trades)",
)


@dataclass
class Lab:
    url: str  # the notebook's address, token included


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def write_lab_settings(settings: Path) -> None:
    # No news or update checks: they would try the internet and put a toast over the page.
    folder = settings / "@jupyterlab" / "apputils-extension"
    folder.mkdir(parents=True)
    (folder / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False})
    )


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    root = tmp_path / "notebooks"
    root.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in CELLS]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(nb, root / "panel.ipynb")
    write_lab_settings(tmp_path / "settings")
    token = secrets.token_hex(16)
    port = free_port()
    env = kernel_env(
        {
            "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "settings"),
            "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces"),
            "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
            "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
            "HUBKIT_HOME": str(tmp_path / "home"),
        }
    )
    log = (tmp_path / "lab.log").open("w")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={root}",
            "--LabApp.expose_app_in_browser=True",
            "--ServerApp.allow_root=True",  # CI containers run as root
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            assert server.poll() is None, (tmp_path / "lab.log").read_text()
            try:
                if httpx.get(f"{base}/api/status", params={"token": token}).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "JupyterLab did not answer in time"
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.wait(timeout=0.2)  # doubles as the pause between two polls
        yield Lab(url=f"{base}/lab/tree/panel.ipynb?token={token}")
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


def test_panel_renders_fits_and_acts_in_a_real_browser(lab: Lab, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        # A fresh profile folder: no cookies, cache or settings from any earlier run.
        browser = p.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=str(CHROMIUM),
            args=CHROMIUM_ARGS,
            viewport={"width": WIDTH, "height": HEIGHT},
        )
        try:
            page = browser.pages[0] if browser.pages else browser.new_page()
            page.set_default_timeout(WAIT_MS)
            try:
                check_panel(page, lab, tmp_path)
            finally:
                # what the page showed last, kept in the test's folder for a look
                page.screenshot(path=str(tmp_path / "panel-last.png"))
        finally:
            browser.close()


def check_panel(page: Any, lab: Lab, shots: Path) -> None:
    from playwright.sync_api import expect

    page.goto(lab.url, wait_until="domcontentloaded")
    page.locator(".jp-Notebook .jp-Cell").first.wait_for()
    page.wait_for_function(KERNEL_IDLE)
    # Not awaited: the command's promise settles only when every cell has run.
    page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
    panel = page.locator(".hubkit-status-panel")
    panel.wait_for()
    # The widget view, not a text/HTML repr and not the front end's error box.
    expect(page.get_by_text("Error displaying widget")).to_have_count(0)
    expect(panel.locator(".hubkit-cell-name")).to_contain_text("bybit_public_trade_linear")

    # Live: the row count grows between two looks.
    first = rows_shown(page)
    page.wait_for_function(f"() => ({ROWS_SHOWN}) > {first}")
    assert rows_shown(page) > first

    # Everything a person needs is inside the 1280x800 window, nothing cut.
    panel.scroll_into_view_if_needed()
    headers = panel.locator(".hubkit-header")
    expect(headers).to_have_count(12)  # above the buttons, then the eleven columns
    labels = [h.inner_text() for h in headers.all()]
    assert labels[1:] == [
        "sink", "sync", "schedule", "conn.", "last sync", "rows", "lag", "pending",
        "reconn.", "rate left", "last error",
    ]  # fmt: skip
    buttons = [page.get_by_role("button", name=name) for name in ("Sync", "Reconnect")]
    for element in [*headers.all()[1:], *buttons]:
        assert_inside_window(element, WIDTH, HEIGHT)
        assert not clipped(element), element.inner_text()

    # The buttons act and say what happened.
    message = panel.locator(".hubkit-message")
    buttons[0].click()
    expect(message).to_contain_text("✓ synced")
    buttons[1].click()
    expect(message).to_contain_text("✓ reconnected")
    expect(panel.locator(".hubkit-cell-reconnects")).to_have_text("1")

    page.screenshot(path=str(shots / "panel-1280.png"))

    # A wide screen: the button labels are whole.
    page.set_viewport_size({"width": 1700, "height": HEIGHT})
    for button in buttons:
        assert_inside_window(button, 1700, HEIGHT)
        assert not clipped(button), button.inner_text()


KERNEL_IDLE = """() => {
    const widget = window.jupyterapp && window.jupyterapp.shell.currentWidget;
    const session = widget && widget.sessionContext && widget.sessionContext.session;
    return Boolean(session && session.kernel && session.kernel.status === 'idle');
}"""
ROWS_SHOWN = (
    "parseInt(document.querySelector('.hubkit-status-panel .hubkit-cell-rows')"
    ".innerText.replace(/,/g, ''), 10)"
)


def rows_shown(page: Any) -> int:
    value: int = page.evaluate(f"() => {ROWS_SHOWN}")
    return value


def assert_inside_window(element: Any, width: int, height: int) -> None:
    box = element.bounding_box()
    assert box is not None, "not displayed"
    text = element.inner_text()
    assert box["x"] >= 0 and box["x"] + box["width"] <= width, (text, box)
    assert box["y"] >= 0 and box["y"] + box["height"] <= height, (text, box)


def clipped(element: Any) -> bool:
    """True when the element's text does not fit its box (cut or shortened)."""
    is_clipped: bool = element.evaluate(
        """e => [e, ...e.querySelectorAll('*')].some(
            n => n.scrollWidth > n.clientWidth + 1 && getComputedStyle(n).overflow !== 'visible')"""
    )
    return is_clipped
