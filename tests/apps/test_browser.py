"""`visec serve` in a real headless browser: the distribution's Chromium driven by Playwright.

The server is the real command (`python -m visec.cli serve`) on a free loopback port, stopped by its
pid. Chromium comes from Debian's package (`.ci/run` installs it; the README says how); Playwright
never downloads a browser. Where Chromium is absent the test is skipped, except under `.ci/run`,
which sets VISEC_REQUIRE_BROWSER=1 so a missing browser fails instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from visec.federated.deploy import free_port, stop, wait_port

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(
    CHROMIUM is None and os.environ.get("VISEC_REQUIRE_BROWSER") != "1",
    reason="no Chromium (apt-get install chromium); .ci/run installs it and requires this test")


@pytest.fixture
def server(tiny_runs, tmp_path):
    port = free_port()
    log = open(tmp_path / "serve.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "visec.cli", "serve", "--runs", str(tiny_runs), "--port",
                             str(port), "--frames", "4"], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        try:
            wait_port("127.0.0.1", port, timeout=120)
        except TimeoutError:
            pytest.fail("visec serve did not start: " + (tmp_path / "serve.log").read_text()[-2000:])
        yield f"http://127.0.0.1:{port}/", proc
    finally:
        stop(proc)
        log.close()
    assert proc.poll() is not None  # stopped by its pid


def test_upload_in_a_real_browser(server, media, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    assert CHROMIUM is not None, "Chromium is required here (apt-get install chromium)"
    url, proc = server
    (tmp_path / "notes.png").write_text("not an image at all\n" * 10)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.goto(url)
            expect(page.locator("h1")).to_contain_text("is this face forged")
            page.set_input_files("#file", str(media / "face.png"))
            verdict = page.locator("#result #verdict")
            expect(verdict).to_contain_text("Ensemble verdict", timeout=60_000)
            row = page.locator("#result tr.detector-row").first
            expect(row).to_contain_text("classifier/tiny_cnn")
            prob = float(row.locator("td").nth(1).inner_text())
            assert 0.0 <= prob <= 1.0
            saliency = page.locator("#result img.saliency").first
            expect(saliency).to_be_visible()
            assert saliency.evaluate("img => img.complete && img.naturalWidth") == 128  # the map decoded
            page.screenshot(path=str(tmp_path / "result.png"), full_page=True)
            assert (tmp_path / "result.png").stat().st_size > 10_000

            page.set_input_files("#file", str(tmp_path / "notes.png"))
            expect(page.locator("#error")).to_contain_text("not an image or video", timeout=30_000)
            expect(page.locator("#result")).to_be_empty()
            page.screenshot(path=str(tmp_path / "error.png"))
        finally:
            browser.close()
    assert proc.poll() is None  # the server kept serving through the bad upload
