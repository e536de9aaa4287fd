"""The real app in a real browser: ``streamlit run`` in a subprocess, driven by Playwright and Chromium.

Sets a tiny configuration through the URL and the sidebar widgets, presses Start, and waits for the live
view to finish the training and redraw the page by itself (the fragment's ``run_every``; nothing here
reloads the page), then checks the charts and saves ``docs/screenshot.png``. A second test runs a tiny
sweep from the Sweep tab and saves ``docs/sweep-tab.png``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT = ROOT / "docs" / "screenshot.png"
TRAINING_TIMEOUT_MS = 300_000
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing: no browser to drive")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


def wait_for_health(url: str, server: subprocess.Popen, log: Path, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"streamlit exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"streamlit did not answer within {timeout} s:\n{log.read_text()[-3000:]}")


@pytest.fixture
def server(cache_dir, tmp_path, dataset_dir):
    """``streamlit run streamlit_app.py`` on a free port with a temporary run cache; always stopped."""
    port = free_port()
    env = {**os.environ, "RESNET_CACHE_DIR": str(cache_dir), "FASHION_MNIST_DIR": str(dataset_dir)}
    log = tmp_path / "streamlit.log"
    command = [
        sys.executable, "-m", "streamlit", "run", "streamlit_app.py",
        "--server.port", str(port),
        "--server.headless", "true",
        "--server.fileWatcherType", "none",
    ]  # fmt: skip
    with open(log, "wb") as output:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://localhost:{port}"
    try:
        wait_for_health(url, process, log)
        yield url
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)  # its own session: the server and nothing else
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)


def test_tiny_training_in_the_browser(server, cache_dir):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            # Part of the configuration comes from a shared link...
            page.goto(f"{server}/?batch_size=64&eval_subset=200&depth=18")
            sidebar = page.get_by_test_id("stSidebar")
            expect(sidebar.get_by_text("No GPU found", exact=False)).to_be_visible(timeout=90_000)
            expect(page.get_by_text("No training runs yet", exact=False)).to_be_visible()

            # ...and part from the widgets: 200 training images, 3 epochs.
            subset = sidebar.get_by_role("spinbutton", name="Training images")
            subset.fill("200")
            subset.press("Enter")
            page.wait_for_function("() => location.search.includes('train_subset=200')", timeout=30_000)
            epochs = sidebar.get_by_test_id("stSlider").filter(has_text="Epochs").get_by_role("slider")
            epochs.focus()
            epochs.press("Home")
            epochs.press("ArrowRight")
            epochs.press("ArrowRight")
            page.wait_for_function("() => location.search.includes('epochs=3&')", timeout=30_000)
            query = page.evaluate("() => location.search")
            for part in ("batch_size=64", "eval_subset=200", "depth=18", "train_subset=200", "epochs=3"):
                assert part in query, query
            expect(sidebar.get_by_text("unknown until the first epoch", exact=False)).to_be_visible()

            sidebar.get_by_role("button", name="Start", exact=True).click()
            expect(page.get_by_text("Started run", exact=False)).to_be_visible(timeout=60_000)

            # The live view redraws on its own; when the job ends it redraws the whole page.
            accuracy = page.locator('[data-testid="stVegaLiteChart"][aria-label="Train and test accuracy per epoch"]')
            expect(page.get_by_text("trained 3 epochs", exact=False)).to_be_visible(timeout=TRAINING_TIMEOUT_MS)
            expect(accuracy).to_have_count(1, timeout=30_000)  # the redraw is over (no stale copy left)
            expect(accuracy.locator("svg")).to_be_visible(timeout=30_000)
            expect(accuracy).to_contain_text("Train and test accuracy per epoch")
            matrix = page.locator(
                '[data-testid="stVegaLiteChart"][aria-label="Confusion matrix of true against predicted classes"]'
            )
            expect(matrix.locator("svg")).to_be_visible(timeout=30_000)
            expect(matrix).to_contain_text("Confusion matrix")
            expect(page.get_by_text("Results per epoch")).to_be_visible()
            expect(page.get_by_test_id("stImage").first).to_be_visible()
            run_ids = [path.name for path in cache_dir.iterdir()]
            assert len(run_ids) == 1 and (cache_dir / run_ids[0] / "history.csv").read_text().count("\n") == 4

            assert page.get_by_test_id("stException").count() == 0
            assert page.get_by_text("This app has encountered an error").count() == 0

            # The whole page: the main area scrolls inside the window, so grow the window to fit it.
            height = page.evaluate("() => document.querySelector('[data-testid=\"stMain\"]').scrollHeight")
            page.set_viewport_size({"width": 1400, "height": min(int(height) + 40, 9000)})
            page.wait_for_timeout(2000)  # let the charts re-layout
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True)
        finally:
            browser.close()


def test_two_pages_pressing_start_together_run_one_training(server, cache_dir):
    """Issue 5, scenario 6: two browser tabs (two Streamlit sessions) press Start at the same moment."""
    from playwright.sync_api import expect, sync_playwright

    query = "batch_size=64&eval_subset=200&depth=18&train_subset=200&epochs=2"
    started, refused = "Started run", "Not started: a training is already running"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            pages = [browser.new_page(viewport={"width": 1400, "height": 1000}) for _ in range(2)]
            buttons = []
            for page in pages:
                page.goto(f"{server}/?{query}")
                expect(page.get_by_text("No training runs yet", exact=False)).to_be_visible(timeout=90_000)
                buttons.append(page.get_by_test_id("stSidebar").get_by_role("button", name="Start", exact=True))
            for button in buttons:
                expect(button).to_be_enabled()
            for button in buttons:  # back to back: the second click lands while the first is being prepared
                button.click()
            for page in pages:
                expect(
                    page.get_by_text(started, exact=False).or_(page.get_by_text(refused, exact=False))
                ).to_be_visible(timeout=60_000)
            outcomes = [(page.get_by_text(started).count(), page.get_by_text(refused).count()) for page in pages]
            assert sorted(outcomes) == [(0, 1), (1, 0)], outcomes
            run_ids = [path.name for path in cache_dir.iterdir()]
            assert len(run_ids) == 1, run_ids

            # The refused tab is told which run is training and follows it live, like the tab that started it.
            loser = pages[[count for count, _ in outcomes].index(0)]
            expect(loser.get_by_text(f"Training run {run_ids[0]}", exact=False)).to_be_visible(timeout=60_000)
            for page in pages:
                expect(page.get_by_text("trained 2 epochs", exact=False)).to_be_visible(timeout=TRAINING_TIMEOUT_MS)
                assert page.get_by_test_id("stException").count() == 0
            assert [path.name for path in cache_dir.iterdir()] == run_ids
            assert (cache_dir / run_ids[0] / "history.csv").read_text().count("\n") == 3
        finally:
            browser.close()


SWEEP_SCREENSHOT = ROOT / "docs" / "sweep-tab.png"


def test_tiny_sweep_in_the_browser(server, cache_dir):
    """The Sweep tab: two tiny runs (seeds 1, 2) started from the tab, followed live, then its answer."""
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{server}/?batch_size=64&eval_subset=200&depth=18&train_subset=256&epochs=1")
            expect(page.get_by_text("No training runs yet", exact=False)).to_be_visible(timeout=90_000)
            page.get_by_role("tab", name="Sweep").click()
            name = page.get_by_role("textbox", name="Sweep name")
            name.fill("browser")
            name.press("Enter")
            seeds = page.get_by_role("textbox", name="Seeds")
            seeds.fill("1,2")
            seeds.press("Enter")
            expect(page.get_by_text("2 runs", exact=False)).to_be_visible(timeout=30_000)
            page.get_by_role("button", name="Start sweep").click()
            expect(page.get_by_text("Started sweep browser: 2 runs", exact=False)).to_be_visible(timeout=60_000)

            # The progress box redraws on its own and the whole page once the sweep ends.
            expect(page.get_by_text("Sweep browser finished", exact=False)).to_be_visible(
                timeout=2 * TRAINING_TIMEOUT_MS
            )
            pareto = page.locator(
                '[data-testid="stVegaLiteChart"][aria-label="Final test accuracy against total training time"]'
            )
            expect(pareto).to_have_count(1, timeout=30_000)
            expect(pareto.locator("svg")).to_be_visible(timeout=30_000)
            curves = page.locator('[data-testid="stVegaLiteChart"][aria-label="Test accuracy per epoch of every run"]')
            expect(curves.locator("svg")).to_be_visible(timeout=30_000)
            expect(page.get_by_text("On the Pareto front", exact=True)).to_be_visible()
            expect(page.get_by_text("Within ", exact=False).first).to_be_visible()
            runs = [path for path in cache_dir.iterdir() if path.name != ".sweeps"]
            assert len(runs) == 2 and all((run / "history.csv").read_text().count("\n") == 2 for run in runs)
            assert page.get_by_test_id("stException").count() == 0

            height = page.evaluate("() => document.querySelector('[data-testid=\"stMain\"]').scrollHeight")
            page.set_viewport_size({"width": 1400, "height": min(int(height) + 40, 9000)})
            page.wait_for_timeout(2000)  # let the charts re-layout
            SWEEP_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SWEEP_SCREENSHOT), full_page=True)
        finally:
            browser.close()


EXPLAIN_SCREENSHOT = ROOT / "docs" / "explain.png"
MAP_SCREENSHOT = ROOT / "docs" / "feature-map.png"


def test_explaining_a_mistake_in_the_browser(server, cache_dir, dataset_dir):
    """A trained tiny run: Why? under a misclassified image shows its heatmaps and nearest training images,
    and the feature-space maps of both epochs are drawn; both are saved as screenshots for the README."""
    from playwright.sync_api import expect, sync_playwright

    from resnet.config import TrainConfig
    from resnet.runs import RunStore
    from resnet.trainer import prepare_training, train_prepared

    config = TrainConfig(epochs=2, batch_size=32, train_subset=512, eval_subset=500, depth=18)
    run = train_prepared(prepare_training(config, store=RunStore(cache_dir), dataset_dir=dataset_dir))
    assert run.epochs_done == 2

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(server)
            why = page.get_by_role("button", name="Why?")
            expect(why.first).to_be_visible(timeout=90_000)
            why.first.click()
            close = page.get_by_role("button", name="Close")
            expect(close).to_be_visible(timeout=120_000)
            # The innermost block holding both the Close button and the neighbours: the bordered panel.
            panel = page.get_by_test_id("stVerticalBlock").filter(has=close).filter(has_text="nearest training images")
            panel = panel.last
            expect(panel).to_be_visible(timeout=120_000)
            expect(panel.get_by_text("Evidence for", exact=False).first).to_be_visible()
            expect(panel.get_by_text("similarity", exact=False).first).to_be_visible()
            assert panel.get_by_test_id("stImage").count() >= 2 + 8  # image, heatmaps, 8 neighbours

            maps = page.locator('[data-testid="stVegaLiteChart"][aria-label^="Feature-space map of epoch"]')
            expect(maps).to_have_count(2, timeout=60_000)
            expect(maps.nth(1).locator("svg")).to_be_visible(timeout=30_000)
            assert page.get_by_test_id("stException").count() == 0

            panel.scroll_into_view_if_needed()
            page.wait_for_timeout(1000)
            panel.screenshot(path=str(EXPLAIN_SCREENSHOT))
            row = page.get_by_test_id("stHorizontalBlock").filter(has=maps.first)
            row.scroll_into_view_if_needed()
            page.wait_for_timeout(2000)  # let the charts lay out
            row.last.screenshot(path=str(MAP_SCREENSHOT))
        finally:
            browser.close()
