"""How long each click takes to answer, as a person sees it: the real page in Chromium.

    .venv/bin/python benchmarks/click_latency.py --cache /path/to/cache [--rounds 3] [--run RUN_ID]

Starts ``streamlit run streamlit_app.py`` on the given run cache (nothing in it is changed: the app only
reads it here), opens the page in headless Chromium (Debian's ``/usr/bin/chromium``) and times:

- the first load: from navigation until the page has settled with every area drawn;
- a fixed list of clicks, each ``--rounds`` times (a toggle is switched on and off, a selectbox goes back
  and forth between two values): the seconds from the click until the page settles, median and worst.

"Settled" means: Streamlit's running indicator is gone, no element is marked stale, and the page's DOM
has not changed for ``QUIET`` seconds; the time is that of its last change. The server side comes from
the app's own rerun log (``app/areas.py``, ``$RESNET_RERUN_LOG``): what each click reran (the whole
page, or which area alone) and its seconds on the server, median over the rounds.

With ``--live SECONDS``, it then presses the sidebar's Quick try (this adds a run to the cache) and reports
the server time of the live view's refresh ticks over that many seconds of training.

The shown run is the newest in the cache unless ``--run`` picks one (through the Runs tab's "Show in all
views"). Clicks whose widget the page does not have (an overlay needs two runs; a map epoch change two
recorded maps) are reported as skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
QUIET = 0.5  # seconds without a DOM change that count as settled
TIMEOUT = 120.0  # seconds a click may take before the benchmark gives up on it

# Installed before every click: the time of the click and of the page's last DOM change after it.
WATCH = """() => {
  const w = window.__latency = {click: null, last: null};
  if (!window.__latencyObserver) {
    window.__latencyObserver = new MutationObserver((changes) => {
      // data-test-script-state is a hook for tests, not something a person sees
      if (window.__latency.click === null) return;
      if (changes.some((c) => c.attributeName !== 'data-test-script-state'))
        window.__latency.last = performance.now();
    });
    window.__latencyObserver.observe(document.body,
      {subtree: true, childList: true, attributes: true, characterData: true});
    document.addEventListener('pointerup', () => {
      window.__latency.click = performance.now(); window.__latency.last = window.__latency.click;
    }, true);
  }
}"""
STATE = """() => ({
  busy: !!document.querySelector('[data-testid="stStatusWidget"]')
        || !!document.querySelector('[data-stale="true"]'),
  now: performance.now(), click: window.__latency.click, last: window.__latency.last})"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


def start_server(cache: Path, log: Path, rerun_log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "RESNET_CACHE_DIR": str(cache), "RESNET_RERUN_LOG": str(rerun_log)}
    command = [
        sys.executable, "-m", "streamlit", "run", "streamlit_app.py", "--server.port", str(port),
        "--server.headless", "true", "--server.fileWatcherType", "none",
    ]  # fmt: skip
    with open(log, "wb") as output:
        server = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://localhost:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"streamlit exited:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2):
                return server, url
        except OSError:
            time.sleep(0.3)
    raise SystemExit("streamlit did not answer within 120 s")


def settle(page, *, since_click: bool = True) -> float:
    """Seconds from the click (or from now) until the page settled (see the module docstring)."""
    started = time.monotonic()
    origin = None
    while time.monotonic() - started < TIMEOUT:
        state = page.evaluate(STATE)
        if origin is None:
            origin = state["click"] if since_click and state["click"] is not None else state["now"]
        last = state["last"] if state["last"] is not None else origin
        if not state["busy"] and state["now"] - last >= QUIET * 1000:
            return max(0.0, last - origin) / 1000
        time.sleep(0.02)
    raise SystemExit(f"the page did not settle within {TIMEOUT} s")


def read_log(path: Path, offset: int) -> tuple[list[dict], int]:
    """The rerun-log lines written after byte ``offset``, and the new offset."""
    if not path.exists():
        return [], offset
    data = path.read_bytes()
    lines = [json.loads(line) for line in data[offset:].decode().splitlines() if line.strip()]
    return lines, len(data)


@dataclass
class Click:
    name: str
    act: object  # act(page, round) -> None, or False when the page lacks the widget
    seconds: list[float] = field(default_factory=list)
    server: list[float] = field(default_factory=list)
    reran: list[str] = field(default_factory=list)
    skipped: str = ""


def toggle(label: str):
    def act(page, _round):
        widget = page.get_by_test_id("stCheckbox").filter(has_text=label)
        if widget.count() == 0:
            return False
        widget.first.locator("label").click()

    return act


def open_list(page, box) -> None:
    """Open a selectbox's or multiselect's list of options (its combobox opens on the arrow key)."""
    box.locator("input").focus()
    page.keyboard.press("ArrowDown")
    page.get_by_role("listbox").first.wait_for(timeout=10_000)


def choose(label: str, values: tuple[str, str], *, nth: int = 0, exact: bool = True):
    """Pick ``values[round % 2]`` in the ``nth`` selectbox labelled ``label``."""

    def act(page, round_):
        box = page.get_by_test_id("stSelectbox").filter(has=page.get_by_text(label, exact=True))
        if box.count() <= nth:
            return False
        open_list(page, box.nth(nth))
        option = page.get_by_role("option", name=values[round_ % 2], exact=exact)
        if option.count() == 0:
            page.keyboard.press("Escape")
            return False
        option.first.click()

    return act


def button(name: str, *, nth: int = 0):
    def act(page, _round):
        found = page.get_by_role("button", name=name, exact=True)
        if found.count() <= nth:
            return False
        found.nth(nth).click()

    return act


def tab(name: str):
    def act(page, _round):
        page.get_by_role("tab", name=name).click()

    return act


def map_epoch(page, round_):
    box = page.get_by_test_id("stSelectbox").filter(has=page.get_by_text("Compare with epoch", exact=True))
    if box.count() == 0:
        return False
    open_list(page, box.first)
    options = page.get_by_role("option")
    if options.count() < 2:
        page.keyboard.press("Escape")
        return False
    (options.first if round_ % 2 == 0 else options.last).click()  # one map ("none"), then two


def overlay(page, round_):
    """Add a run to the overlay (even rounds), take the last one added off again (odd rounds)."""
    box = page.get_by_test_id("stMultiSelect").filter(has=page.get_by_text("Runs to overlay", exact=True))
    if box.count() == 0:
        return False
    if round_ % 2 == 0:
        open_list(page, box.first)
        options = page.get_by_role("option")
        if options.count() == 0:
            page.keyboard.press("Escape")
            return False
        options.first.click()
        page.keyboard.press("Escape")
    else:
        box.first.get_by_role("button", name="Remove").last.click()


def clicks() -> list[Click]:
    return [
        Click("Row-normalised (confusion matrix)", toggle("Row-normalised")),
        Click("Pair pick: Predicted as", choose("Predicted as", ("Shirt", "Pullover"))),
        Click("Misclassified only (sample grid)", toggle("Misclassified only")),
        Click("Filter: True class (sample grid)", choose("True class", ("Shirt", "Coat"), nth=1)),
        Click("Why? (first: loads the model)", button("Why?")),
        Click("Why? (another image)", button("Why?", nth=1)),
        Click("Close the explanation", button("Close")),
        Click("Map: compare with epoch", map_epoch),
        Click("Tab: Runs", tab("Runs")),
        Click("Runs overlay: add/remove a run", overlay),
        Click("Tab: Understanding", tab("Understanding the predictions")),
    ]


def live_ticks(page, rerun_log: Path, seconds: float) -> list[float]:
    """Press Quick try and Start, and return the server seconds of each live-view tick while it trains."""
    _, offset = read_log(rerun_log, 0)
    sidebar = page.get_by_test_id("stSidebar")
    sidebar.get_by_role("button", name="Quick try").click()
    settle(page, since_click=False)
    sidebar.get_by_role("button", name="Start", exact=True).click()
    page.wait_for_timeout(seconds * 1000)
    lines, _ = read_log(rerun_log, offset)
    stop = sidebar.get_by_role("button", name="Stop", exact=True)
    if stop.is_enabled():  # still training
        stop.click()
    return [line["seconds"] for line in lines if line["area"] == "live"]


def measure(
    url: str, rerun_log: Path, *, rounds: int, run_id: str | None, live: float
) -> tuple[float, list, list[Click], list[float]]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        offset = 0
        started = time.monotonic()
        page.goto(url)
        page.get_by_text("Feature-space map").first.wait_for(timeout=TIMEOUT * 1000)
        page.evaluate(WATCH)
        settle(page, since_click=False)
        first_load = time.monotonic() - started
        first_log, offset = read_log(rerun_log, offset)
        if run_id:
            page.get_by_role("tab", name="Runs").click()
            settle(page)
            box = page.get_by_test_id("stSelectbox").filter(has=page.get_by_text("Run", exact=True))
            open_list(page, box.first)
            page.keyboard.type(run_id)  # filters the list: it draws a few hundred runs only as it scrolls
            page.get_by_role("option", name=run_id).first.click()
            settle(page, since_click=False)
            page.get_by_role("button", name="Show in all views").click()
            settle(page)
            page.get_by_role("tab", name="Understanding the predictions").click()
            settle(page)
        _, offset = read_log(rerun_log, offset)
        measured = clicks()
        for round_ in range(rounds):
            for click in measured:
                if click.skipped:
                    continue
                page.evaluate(WATCH)
                if click.act(page, round_) is False:
                    click.skipped = "the page has no such widget"
                    settle(page, since_click=False)
                    _, offset = read_log(rerun_log, offset)
                    continue
                click.seconds.append(settle(page))
                lines, offset = read_log(rerun_log, offset)
                click.server.append(sum(line["seconds"] for line in lines))
                click.reran.append("+".join(line["area"] for line in lines) or "nothing")
        ticks = live_ticks(page, rerun_log, live) if live else []
        browser.close()
    return first_load, first_log, measured, ticks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, required=True, help="the run cache the app reads")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--run", dest="run_id", help="the run to show (default: the newest)")
    parser.add_argument("--live", type=float, default=0, help="seconds of a Quick try whose live ticks to time")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="click-latency-"))
    rerun_log, server_log = folder / "reruns.jsonl", folder / "streamlit.log"
    server, url = start_server(args.cache.resolve(), server_log, rerun_log)
    try:
        first_load, first_log, measured, ticks = measure(
            url, rerun_log, rounds=args.rounds, run_id=args.run_id, live=args.live
        )
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), "")
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
    print(f"cache {args.cache} · {len(list(args.cache.glob('*/state.json')))} runs · {args.rounds} rounds")
    print(f"cpu flags: {' '.join(flag for flag in wanted if f' {flag}' in flags)} · {os.cpu_count()} cores")
    page_runs = [line["seconds"] for line in first_log if line["area"] == "page"]
    print(f"first load: {first_load:.2f} s in Chromium; the page's runs on the server: {page_runs}")
    print(f"\n{'click':<38} {'Chromium median (max) s':>24} {'server median s':>16}  reran")
    for click in measured:
        if click.skipped or not click.seconds:
            print(f"{click.name:<38} {'skipped: ' + (click.skipped or 'no rounds'):>42}")
            continue
        browser_text = f"{statistics.median(click.seconds):.2f} ({max(click.seconds):.2f})"
        reran = sorted(set(click.reran))
        print(f"{click.name:<38} {browser_text:>24} {statistics.median(click.server):>16.3f}  {', '.join(reran)}")
    if ticks:
        print(
            f"live view while a Quick try trains: {len(ticks)} ticks, server median {statistics.median(ticks):.4f} s, "
            f"max {max(ticks):.4f} s"
        )
    print(f"\nserver log: {server_log}")


if __name__ == "__main__":
    main()
