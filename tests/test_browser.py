"""The real app in a real browser: ``streamlit run`` in a subprocess, driven by Playwright and Chromium.

Sets a tiny configuration through the URL and the sidebar widgets, presses Start, and waits for the live
view to finish the training and redraw the page by itself (the fragment's ``run_every``; nothing here
reloads the page), then checks the charts; a second test has two pages press Start together; a third runs
a tiny sweep from the Sweep tab; a fourth explains a mistake; a fifth shows a run that trained until returns
diminished; a sixth checks, in the server's rerun log, that a click reruns only the area it is in; a seventh
writes a run's TensorBoard files from the Runs tab and opens them in a real TensorBoard. Each saves what it
sees as screenshots.

One server and one Chromium serve the whole module (starting each costs seconds); every test gets a
fresh browser context (its own pages and cookies: a new Streamlit session) and an empty run cache: the
server's cache folder is emptied between tests, once its job is idle.

Screenshots go to ``$SCREENSHOT_DIR`` (default ``test-artifacts/``, git-ignored), so running the tests
leaves a checkout clean; ``bash scripts/screenshots.sh`` writes them into ``docs/`` for the README.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from support import EXPLAINED, FINISHED, copy_run, run_folders

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(os.environ.get("SCREENSHOT_DIR") or ROOT / "test-artifacts")
SCREENSHOT = SCREENSHOTS / "screenshot.png"
TRAINING_TIMEOUT_MS = 300_000
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = [  # a real server and Chromium
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing: no browser to drive"),
]


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


@pytest.fixture(scope="module")
def app_server(tmp_path_factory, session_cache, dataset_dir):
    """``streamlit run streamlit_app.py`` on a free port with this module's run cache: (url, cache, rerun log);
    always stopped."""
    from resnet.core.precision_record import record_path

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    folder = tmp_path_factory.mktemp("browser")
    cache = folder / "cache"
    cache.mkdir()
    if record_path(session_cache).is_file():  # what the session measured of auto precision, as in cache_dir
        shutil.copy2(record_path(session_cache), record_path(cache))
    port = free_port()
    rerun_log = folder / "reruns.jsonl"  # what each click reran on the server (app/areas.py)
    env = {
        **os.environ,
        "RESNET_CACHE_DIR": str(cache),
        "FASHION_MNIST_DIR": str(dataset_dir),
        "RESNET_RERUN_LOG": str(rerun_log),
    }
    log = folder / "streamlit.log"
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
        yield url, cache, rerun_log
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)  # its own session: the server, its children, nothing else
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)


def wait_until_no_run_trains(cache: Path, timeout: float = 120.0) -> None:
    """The server's job is over: no run in the cache says ``running`` (a test that failed mid-training)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = []
        for state in cache.glob("*/state.json"):
            try:
                states.append(json.loads(state.read_text()).get("status"))
            except (OSError, ValueError):
                pass
        if "running" not in states:
            return
        time.sleep(0.5)
    pytest.fail(f"a run in {cache} still trains after {timeout} s")


@pytest.fixture
def server(app_server):
    """The module's server with an empty run cache (its precision record kept): its URL."""
    url, cache, _ = app_server
    wait_until_no_run_trains(cache)
    for path in cache.iterdir():
        if path.is_dir():
            shutil.rmtree(path)
    return url


@pytest.fixture
def cache_dir(app_server):
    """The cache folder the module's server reads and writes (this module's, not conftest's)."""
    return app_server[1]


@pytest.fixture
def rerun_log(app_server):
    """``reruns()``: the areas the module's server reran since the last call (its live view's ticks left
    out), from its rerun log (``app/areas.py``)."""
    path, seen = app_server[2], [path_size(app_server[2])]

    def reruns() -> list[str]:
        data = path.read_bytes() if path.exists() else b""
        data = data[: data.rfind(b"\n") + 1]  # whole lines only: the server may be writing one
        lines = [json.loads(line) for line in data[seen[0] :].decode().splitlines() if line.strip()]
        seen[0] = len(data)
        return [line["area"] for line in lines if line["area"] != "live"]

    return reruns


def path_size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium for the module; each test opens its own context (``new_page``)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def new_page(browser):
    """``new_page()``: a page in this test's own browser context (a fresh Streamlit session each)."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        yield context.new_page
    finally:
        context.close()


def test_tiny_training_in_the_browser(server, cache_dir, new_page):
    from playwright.sync_api import expect

    page = new_page()
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
    run_ids = run_folders(cache_dir)
    assert len(run_ids) == 1 and (cache_dir / run_ids[0] / "history.csv").read_text().count("\n") == 4

    assert page.get_by_test_id("stException").count() == 0
    assert page.get_by_text("This app has encountered an error").count() == 0

    # The whole page: the main area scrolls inside the window, so grow the window to fit it.
    height = page.evaluate("() => document.querySelector('[data-testid=\"stMain\"]').scrollHeight")
    page.set_viewport_size({"width": 1400, "height": min(int(height) + 40, 9000)})
    page.wait_for_timeout(2000)  # let the charts re-layout
    page.screenshot(path=str(SCREENSHOT), full_page=True)


def test_two_pages_pressing_start_together_run_one_training(server, cache_dir, new_page):
    """Issue 5, scenario 6: two browser tabs (two Streamlit sessions) press Start at the same moment."""
    from playwright.sync_api import expect

    query = "batch_size=64&eval_subset=200&depth=18&train_subset=200&epochs=2"
    started, refused = "Started run", "Not started: a training is already running"
    pages = [new_page() for _ in range(2)]
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
        expect(page.get_by_text(started, exact=False).or_(page.get_by_text(refused, exact=False))).to_be_visible(
            timeout=60_000
        )
    outcomes = [(page.get_by_text(started).count(), page.get_by_text(refused).count()) for page in pages]
    assert sorted(outcomes) == [(0, 1), (1, 0)], outcomes
    run_ids = run_folders(cache_dir)
    assert len(run_ids) == 1, run_ids

    # The refused tab is told which run is training and follows it live, like the tab that started it.
    loser = pages[[count for count, _ in outcomes].index(0)]
    expect(loser.get_by_text(f"Training run {run_ids[0]}", exact=False)).to_be_visible(timeout=60_000)
    for page in pages:
        expect(page.get_by_text("trained 2 epochs", exact=False)).to_be_visible(timeout=TRAINING_TIMEOUT_MS)
        assert page.get_by_test_id("stException").count() == 0
    assert run_folders(cache_dir) == run_ids
    assert (cache_dir / run_ids[0] / "history.csv").read_text().count("\n") == 3


SWEEP_SCREENSHOT = SCREENSHOTS / "sweep-tab.png"


def test_tiny_sweep_in_the_browser(server, cache_dir, new_page):
    """The Sweep tab: two tiny runs (seeds 1, 2) started from the tab, followed live, then its answer."""
    from playwright.sync_api import expect

    page = new_page()
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
    expect(page.get_by_text("Sweep browser finished", exact=False)).to_be_visible(timeout=2 * TRAINING_TIMEOUT_MS)
    pareto = page.locator(
        '[data-testid="stVegaLiteChart"][aria-label="Final test accuracy against total training time"]'
    )
    expect(pareto).to_have_count(1, timeout=30_000)
    expect(pareto.locator("svg")).to_be_visible(timeout=30_000)
    curves = page.locator('[data-testid="stVegaLiteChart"][aria-label="Test accuracy per epoch of every run"]')
    expect(curves.locator("svg")).to_be_visible(timeout=30_000)
    expect(page.get_by_text("On the Pareto front", exact=True)).to_be_visible()
    expect(page.get_by_text("Within ", exact=False).first).to_be_visible()
    runs = [cache_dir / name for name in run_folders(cache_dir)]
    assert len(runs) == 2 and all((run / "history.csv").read_text().count("\n") == 2 for run in runs)
    assert page.get_by_test_id("stException").count() == 0

    height = page.evaluate("() => document.querySelector('[data-testid=\"stMain\"]').scrollHeight")
    page.set_viewport_size({"width": 1400, "height": min(int(height) + 40, 9000)})
    page.wait_for_timeout(2000)  # let the charts re-layout
    page.screenshot(path=str(SWEEP_SCREENSHOT), full_page=True)


EXPLAIN_SCREENSHOT = SCREENSHOTS / "explain.png"
MAP_SCREENSHOT = SCREENSHOTS / "feature-map.png"


def test_explaining_a_mistake_in_the_browser(server, cache_dir, new_page, trained):
    """A trained tiny run: Why? under a misclassified image shows its heatmaps and nearest training images,
    and the feature-space maps of both epochs are drawn; both are saved as screenshots for the README."""
    from playwright.sync_api import expect

    copy_run(trained(EXPLAINED).path, cache_dir)  # the explanation tests' run, trained once per session

    page = new_page()
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
    # Image, heatmaps, 8 neighbours: waited for, since the neighbours' images arrive after the sentence
    # that names them (seen once: 3 images counted the moment "similarity" showed).
    expect(panel.get_by_test_id("stImage").nth(2 + 8 - 1)).to_be_visible(timeout=30_000)
    assert panel.get_by_test_id("stImage").count() >= 2 + 8

    maps = page.locator('[data-testid="stVegaLiteChart"][aria-label^="Feature-space map of epoch"]')
    expect(maps).to_have_count(2, timeout=60_000)
    expect(maps.nth(1).locator("canvas")).to_be_visible(timeout=30_000)  # thousands of points: a canvas
    assert page.get_by_test_id("stException").count() == 0

    panel.scroll_into_view_if_needed()
    page.wait_for_timeout(1000)
    panel.screenshot(path=str(EXPLAIN_SCREENSHOT))
    row = page.get_by_test_id("stHorizontalBlock").filter(has=maps.first)
    row.scroll_into_view_if_needed()
    page.wait_for_timeout(2000)  # let the charts lay out
    row.last.screenshot(path=str(MAP_SCREENSHOT))


AUTO_SCREENSHOT = SCREENSHOTS / "auto-run.png"


def test_an_auto_run_in_the_browser(server, cache_dir, new_page, trained):
    """A tiny run that trained until returns diminished: the page says why it stopped, and the accuracy
    against time chart shades its cooldown; saved as a screenshot for the README."""
    from playwright.sync_api import expect
    from test_auto_training import AUTO

    run = trained(AUTO)
    copy_run(run.path, cache_dir)
    stop = run.state.stop
    page = new_page()
    page.goto(server)
    decided = page.get_by_test_id("stAlert").filter(has_text=f"Stopped adding epochs after epoch {stop.stable_end}")
    expect(decided).to_be_visible(timeout=90_000)
    chart = page.locator('[data-testid="stVegaLiteChart"][aria-label="Test accuracy against training time"]')
    expect(chart.locator("svg")).to_be_visible(timeout=60_000)
    expect(chart.get_by_text(f"cooldown, epochs {stop.stable_end + 1}-{stop.cooldown_end}")).to_be_visible()
    assert page.get_by_test_id("stException").count() == 0
    # The alert a little above the middle (clear of Streamlit's fixed header), the chart below it.
    decided.evaluate("element => element.scrollIntoView({block: 'center'})")
    page.wait_for_timeout(1500)  # let the chart lay out
    top, bottom = decided.bounding_box(), chart.bounding_box()  # in the viewport, as the clip below
    left = min(top["x"], bottom["x"])
    clip = {
        "x": left,
        "y": top["y"],
        "width": max(top["x"] + top["width"], bottom["x"] + bottom["width"]) - left,
        "height": bottom["y"] + bottom["height"] - top["y"],
    }
    page.screenshot(path=str(AUTO_SCREENSHOT), clip=clip)


def settled(page) -> None:
    """Wait until the page's script (the whole page or an area) has finished running."""
    from playwright.sync_api import expect

    page.wait_for_timeout(300)  # a click's rerun has started
    expect(page.locator('[data-test-script-state="notRunning"]')).to_have_count(1, timeout=60_000)
    page.wait_for_timeout(300)


def test_a_click_reruns_only_the_area_it_is_in(server, cache_dir, new_page, trained, rerun_log):
    """The toggle of the confusion matrix reruns that area alone, a filter of the sample grid the grid alone,
    and switching tabs reruns nothing: the server's rerun log names what ran."""
    from playwright.sync_api import expect

    copy_run(trained(EXPLAINED).path, cache_dir)
    page = new_page()
    page.goto(server)
    toggle = page.get_by_test_id("stCheckbox").filter(has_text="Row-normalised")
    expect(toggle).to_be_visible(timeout=90_000)
    settled(page)
    assert "page" in rerun_log()  # the first load ran the whole page

    toggle.locator("label").click()
    expect(page.get_by_text("Confusion matrix (share of each true class)")).to_be_visible(timeout=30_000)
    settled(page)
    assert set(rerun_log()) == {"confusion"}  # (the chart's selection may report itself once more)

    caption = page.get_by_text("evaluated test images match", exact=False)
    shown = caption.inner_text()
    page.get_by_test_id("stCheckbox").filter(has_text="Misclassified only").locator("label").click()
    expect(caption).not_to_have_text(shown, timeout=30_000)  # every image now, not only the mistakes
    settled(page)
    assert set(rerun_log()) == {"sample_grid"}

    page.get_by_role("tab", name="Runs").click()
    expect(page.get_by_text("Compare runs")).to_be_visible(timeout=30_000)
    page.get_by_role("tab", name="Understanding the predictions").click()
    expect(toggle).to_be_visible()
    page.wait_for_timeout(1000)
    assert rerun_log() == []  # the browser switches tabs alone

    # An explanation open below each grid, each its own area; then the whole page runs (a new seed in the
    # sidebar) with both open.
    why = page.get_by_role("button", name="Why?")
    why.first.click()
    close = page.get_by_role("button", name="Close")
    expect(close).to_have_count(1, timeout=120_000)
    why.last.click()  # the sample grid's last image
    expect(close).to_have_count(2, timeout=120_000)
    expect(page.get_by_text("Evidence for", exact=False)).not_to_have_count(0, timeout=120_000)
    settled(page)
    seed = page.get_by_test_id("stSidebar").get_by_role("spinbutton", name="Seed")
    seed.fill("43")
    seed.press("Enter")
    settled(page)
    assert "page" in rerun_log()
    expect(close).to_have_count(2)
    assert page.get_by_test_id("stException").count() == 0

    # Deleting the shown run from the Runs tab's area reruns the whole page: no view shows it any more.
    page.get_by_role("tab", name="Runs").click()
    page.get_by_role("button", name="Delete...").click()
    page.get_by_role("button", name="Yes, delete it").click()
    expect(page.get_by_text("No training runs yet", exact=False)).to_be_visible(timeout=30_000)
    settled(page)
    assert "page" in rerun_log()
    assert page.get_by_test_id("stException").count() == 0


TENSORBOARD_SCREENSHOT = SCREENSHOTS / "tensorboard.png"


def test_a_run_opens_in_tensorboard(server, cache_dir, new_page, trained):
    """The Runs tab's TensorBoard button writes the run's files and shows the command; that command's
    TensorBoard, in the same browser, shows the run's scalars (saved as a screenshot for the README)."""
    from playwright.sync_api import expect

    source = trained(FINISHED).path
    run_id = copy_run(source, cache_dir).name
    shutil.copytree(source / "tensorboard", cache_dir / run_id / "tensorboard")  # what its training wrote

    page = new_page()
    page.goto(server)
    page.get_by_role("tab", name="Runs").click()
    page.get_by_role("button", name="TensorBoard files").click()
    expect(page.get_by_text(f"TensorBoard files of {run_id} written", exact=False)).to_be_visible(timeout=120_000)
    expect(page.get_by_text(f"tensorboard --logdir {cache_dir}", exact=False)).to_be_visible()
    assert (cache_dir / run_id / "tensorboard" / "projector_config.pbtxt").is_file()
    assert page.get_by_test_id("stException").count() == 0
    page.get_by_role("button", name="TensorBoard files").scroll_into_view_if_needed()
    page.screenshot(path=str(ROOT / "test-artifacts" / "runs-tab-tensorboard.png"))  # looked at, not in the README

    port = free_port()
    log = cache_dir.parent / "tensorboard.log"
    tensorboard = subprocess.Popen(
        [str(Path(sys.executable).with_name("tensorboard")), "--logdir", str(cache_dir), "--host", "127.0.0.1",
         "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=open(log, "w"),  # noqa: SIM115 (closed with the process)
    )  # fmt: skip
    try:
        board = new_page()
        deadline = time.monotonic() + 90
        while True:
            try:
                board.goto(f"http://127.0.0.1:{port}/#scalars", timeout=10_000)
                break
            except Exception:  # noqa: BLE001 (Playwright's error while the server starts)
                if time.monotonic() > deadline:
                    pytest.fail(f"TensorBoard did not start: {log.read_text()[-2000:]}")
                time.sleep(1)
        expect(board.get_by_text("epoch_accuracy").first).to_be_visible(timeout=60_000)
        expect(board.get_by_text(f"{run_id}/tensorboard/test").first).to_be_visible(timeout=30_000)
        expect(board.get_by_text("best_accuracy").first).to_be_visible()
        for category in ("best_accuracy", "cumulative_seconds", "epoch_accuracy"):  # show train and test accuracy
            board.get_by_text(category, exact=True).first.click()
        expect(board.get_by_text("tag: epoch_accuracy").first).to_be_visible(timeout=30_000)
        board.get_by_text("Ignore outliers in chart scaling").click()  # two epochs: every point is one
        board.wait_for_timeout(4000)  # let the charts draw their lines
        board.screenshot(path=str(TENSORBOARD_SCREENSHOT))
    finally:
        tensorboard.terminate()
        tensorboard.wait(timeout=30)
