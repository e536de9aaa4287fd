"""Fuzz the run cache: seeded random damage to a real run folder never breaks a listing or escapes the cache.

A real tiny run (ResNet-18, 2 epochs on 256 images, with the features bank Why? writes) is trained once for
this module. Each case copies its folder into a fresh cache (checkpoints as hard links: they are 130 MB; a
mutation that edits one in place first gives the copy its own file), applies 1-3 seeded random mutations
(truncate a file, flip bytes, delete a file, give a JSON field a value of another type, a huge number, NaN, a
"../" or absolute file name, bad cells or extra columns in history.csv, a file replaced by a folder, a named
pipe or a link out of the cache, an array of a predictions, map or features file given an out-of-range
value, another shape or type, or a .npy header claiming a huge array, the .lock made a link, folder or
pipe, an emptied or renamed run folder, the run's TensorBoard files truncated, flipped, made pipes or links,
the folder made a link out of the cache...) and then checks what issues "Every answer the app gives is
true" and 19 ("Every file the app reads is checked before use") ask:

- ``RunStore.list_runs()``, ``Run.summary()``, ``load_predictions``, ``load_feature_map``,
  ``feature_bank``, ``python -m resnet runs`` and ``RunStore.delete`` never raise anything but
  ``RunError`` and list every mutated run either as valid, with sane fields and arrays that fit it, or as
  ``damaged`` with a reason (400 cases); whatever became of its ``tensorboard/`` folder, the run's TensorBoard
  files are written again by one ``event_files.sync`` (a second changes nothing) without changing how it reads;
- the cache's other files: a sweep record (any value anywhere made another type, a huge number, 100,000
  values, 100,000 levels deep, two trials naming one run...), its lock, ``.sweeps`` itself (a link out of
  the cache, a file) and ``.precision.json``, through ``SweepStore``, ``python -m resnet sweeps``, a
  sweep's lock, ``read_record``, auto precision and ``remember`` (150 caches);
- all of the above open, list, rename or remove nothing outside the cache folder (Python's audit hooks see
  every file operation), and a "victim" folder beside the cache, which the mutations point at, stays
  unchanged;
- the app's page (AppTest) on caches holding many mutated runs and one good one shows no exception, lists
  every run, shows any of them and deletes them (3 pages of 20 mutated runs); and on caches whose runs'
  arrays, features and locks and whose sweep and precision records are mutated, Why? and the feature map
  show no exception either, with every thread of the page audited (2 pages of 6 mutated runs; Why? on the
  good run, one valid and one damaged run each);
- ``load_predictions`` (which the page calls for the shown run) gives every array or a ``RunError`` for
  a predictions file with 1-4 flipped bytes: a focused loop, as the cases above rarely get to flip one.

Each test prints how many mutations it tried and their outcomes. The counts keep the module's added cost
for issue 19 (the cache cases, the Why? pages, the features bank) near 35 s on 2 cores. Every case is
reproducible alone: it is seeded with ``SEED + case`` (``CACHE_SEED``, ``EXPLAIN_SEED``) and a failure
names its mutations.
"""

from __future__ import annotations

import collections
import contextlib
import io
import json
import math
import os
import random
import shutil
import sys
import tempfile
import threading
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest
from support import FINISHED, measurement_values
from test_app import charts, texts

from resnet.config import ConfigError, TrainConfig
from resnet.core import precision, precision_record
from resnet.core.hardware import Hardware
from resnet.core.precision_record import Measurement, Source
from resnet.store import artefacts, event_files
from resnet.store.run_state import HISTORY_COLUMNS, OPTIONAL_HISTORY_COLUMNS, RunStatus
from resnet.store.runs import RunError, RunStore
from resnet.sweeps.record import SweepError, SweepStore, new_sweep, requested_sweep

pytestmark = pytest.mark.slow  # fault injection: hundreds of damaged run folders

CASES = 400  # mutated run folders through the store, the CLI and Delete
APP_SESSIONS = 3  # app pages, each on a cache of APP_RUNS mutated runs and one good run
APP_RUNS = 20
PREDICTION_FLIPS = 1000  # byte flips of a predictions file, read back by load_predictions (cheap: no parsing)
CACHE_CASES = 150  # caches whose sweep record, its lock, .sweeps or .precision.json are mutated
EXPLAIN_SESSIONS = 2  # app pages where Why? and the feature map are used on runs with mutated arrays
EXPLAIN_RUNS = 6  # mutated runs per such page (beside one good run); Why? on the good one and one valid one
SEED = 20240611
APP_SEED = 7_000_000
PREDICTION_SEED = 5_000_000
CACHE_SEED = 9_000_000
EXPLAIN_SEED = 11_000_000
APP = Path(__file__).resolve().parent.parent / "streamlit_app.py"
PROJECT_FILES = APP.parent  # the app's own files and its .streamlit config: read, never written
TINY = FINISHED  # tests/support.py
PREDICTION_KEYS = {"probabilities", "indices", "labels", "epoch"}


# --- every file operation, seen through an audit hook -------------------------------------------------------
# (event -> positions of its path arguments). "open" covers open(), os.open() and io.open_code().
PATH_EVENTS = {
    "open": (0,),
    "os.listdir": (0,),
    "os.scandir": (0,),
    "os.remove": (0,),
    "os.rmdir": (0,),
    "os.mkdir": (0,),
    "os.rename": (0, 1),
    "os.link": (0, 1),
    "os.symlink": (0, 1),
    "os.chmod": (0,),
    "os.chown": (0,),
    "os.truncate": (0,),
    "os.utime": (0,),
    "shutil.rmtree": (0,),
    "shutil.copyfile": (0, 1),
    "shutil.move": (0, 1),
}

SYSTEM_FOLDERS = ("/proc/", "/sys/", "/dev/")
READING_EVENTS = ("os.listdir", "os.scandir")
# Renaming onto a link replaces the link, removing one removes the link: neither follows the last part.
LAST_PART_NOT_FOLLOWED = ("os.rename", "os.remove", "os.rmdir", "os.symlink")
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
ANY_THREAD = -1


def writes(event: str, args: tuple) -> bool:
    """Whether a file operation may change something (every one but listing a folder or opening to read)."""
    if event in READING_EVENTS:
        return False
    if event != "open":
        return True
    mode = args[1] if len(args) > 1 else None
    flags = args[2] if len(args) > 2 else None
    return bool(isinstance(mode, str) and set(mode) & set("wax+")) or bool(
        isinstance(flags, int) and flags & WRITE_FLAGS
    )


class Recorder:
    """Records the paths of file operations made by one thread (or every thread) while ``recording``
    (a hook cannot be removed)."""

    def __init__(self):
        self.thread: int | None = None
        # (event, path as given, path resolved at that moment, whether it may write)
        self.events: list[tuple[str, str, str, bool]] = []
        self._local = threading.local()

    def hook(self, event: str, args: tuple) -> None:
        if self.thread is None or event not in PATH_EVENTS or getattr(self._local, "inside", False):
            return
        if self.thread not in (ANY_THREAD, threading.get_ident()):
            return
        self._local.inside = True  # resolving a path must not record itself
        try:
            for position in PATH_EVENTS[event]:
                if position >= len(args):
                    continue
                path = args[position]
                if isinstance(path, int) or path is None:  # a file descriptor: opened by path before
                    continue
                path = os.fsdecode(os.fspath(path))
                if not os.path.isabs(path) and os.sep not in path and path not in (".", ".."):
                    continue  # an entry name relative to a directory descriptor (shutil.rmtree's walk)
                flags = args[2] if event == "open" and len(args) > 2 else None
                no_follow = isinstance(flags, int) and flags & os.O_NOFOLLOW
                if no_follow or event in LAST_PART_NOT_FOLLOWED:  # the last part of the path is not followed
                    resolved = os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))
                else:
                    resolved = os.path.realpath(path)
                self.events.append((event, path, resolved, writes(event, args)))
        finally:
            self._local.inside = False

    @contextlib.contextmanager
    def recording(self, *, every_thread: bool = False):
        self.events = []
        self.thread = ANY_THREAD if every_thread else threading.get_ident()
        try:
            yield self
        finally:
            self.thread = None

    def outside(self, root: Path, *, readable: tuple[Path, ...] = ()) -> list[tuple[str, str, str]]:
        """Recorded operations on paths outside ``root`` (Python's own files, e.g. lazy imports, aside);
        under the ``readable`` folders (the dataset, the app's own files) only reading is allowed."""
        root = os.path.realpath(root)
        allowed = {os.path.realpath(prefix) for prefix in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
        read_only = [os.path.realpath(folder) for folder in readable]
        temporary = os.path.realpath(tempfile.gettempdir())  # an O_TMPFILE open names only this folder
        found = []
        for event, path, resolved, may_write in self.events:
            if resolved == root or resolved.startswith(root + os.sep):
                continue
            if not may_write and any(
                resolved == folder or resolved.startswith(folder + os.sep) for folder in read_only
            ):
                continue
            if event == "open" and resolved == temporary:  # an anonymous temporary file (data/quiet.py's capture)
                continue
            if any(resolved.startswith(prefix + os.sep) for prefix in allowed):
                continue
            if event == "open" and resolved.endswith((".py", ".pyc", ".so")):  # importing a module
                continue
            if resolved.startswith(SYSTEM_FOLDERS):  # e.g. pandas reads the CPU quota from /sys/fs/cgroup
                continue
            found.append((event, path, resolved))
        return found


RECORDER = Recorder()
sys.addaudithook(RECORDER.hook)


# --- the real run, and copies of it -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real_run(trained, tmp_path_factory):
    """A run folder trained for real (the suite's finished run, trained once per session), copied into this
    module's own cache with its nearest-neighbour bank: (folder, run id)."""
    from data.fashion_mnist import load_fashion_mnist
    from resnet.core import explain

    store, trained_run = RunStore(tmp_path_factory.mktemp("fuzz-trained") / "cache"), trained(TINY)
    copy_run(trained_run.path, store.root / trained_run.run_id)
    run = store.load(trained_run.run_id)
    assert run.status is RunStatus.COMPLETE and run.epochs_done == 2, run
    # The nearest-neighbour bank Why? writes, so that mutations reach it too.
    dataset, model = load_fashion_mnist(), artefacts.load_model(store, run)
    artefacts.feature_bank(
        run, lambda indices: explain.penultimate_features(model, dataset.train_images[indices]),
        train_labels=dataset.train_labels,
    )  # fmt: skip
    names = {path.name for path in run.path.iterdir()}
    assert {"state.json", "config.json", "history.csv", "checkpoint-0002.keras", "predictions-0002.npz"} <= names
    assert {"map-0001.npz", "map-0002.npz", "features-0002.npz", "tensorboard"} <= names
    return run.path, run.run_id


@pytest.fixture(scope="module")
def train_labels(real_run) -> np.ndarray:
    """The 60,000 training labels, read before any recording (the dataset is outside the cache)."""
    from data.fashion_mnist import load_fashion_mnist

    return load_fashion_mnist().train_labels


def copy_run(source: Path, target: Path) -> None:
    """Copy a run folder; checkpoints become hard links (``own`` gives a copy its own file before editing)."""

    def copy(src, dst):
        if src.endswith(".keras"):
            os.link(src, dst)
        else:
            shutil.copy2(src, dst)

    shutil.copytree(source, target, copy_function=copy, symlinks=True)


def own(path: Path) -> None:
    """Make ``path`` a file of its own (not a hard link shared with the trained run) before editing it."""
    if path.is_file() and not path.is_symlink() and path.stat().st_nlink > 1:
        temporary = path.with_name(path.name + ".own")
        shutil.copyfile(path, temporary)
        os.replace(temporary, path)


def stamp(path: Path):
    info = path.lstat()
    return info.st_size, info.st_mtime_ns, info.st_ino


def snapshot(folder: Path) -> dict:
    """Every entry under ``folder``: small files by content, large ones by size, time and inode, links by target."""
    found = {}
    for path in sorted(folder.rglob("*")):
        key = str(path.relative_to(folder))
        if path.is_symlink():
            found[key] = ("link", os.readlink(path))
        elif path.is_dir():
            found[key] = ("dir",)
        elif path.stat().st_size < 1_000_000:
            found[key] = ("file", path.read_bytes())
        else:
            found[key] = ("big", stamp(path))
    return found


# --- mutations ----------------------------------------------------------------------------------------------
class Case:
    """One run folder in one cache, the victim folder beside the cache, and the mutations applied to it."""

    def __init__(self, rng: random.Random, folder: Path, victim: Path, original: Path):
        self.rng = rng
        self.folder = folder
        self.victim = victim
        self.original = original  # the trained run folder (read only)
        self.done: list[str] = []
        self.not_a_run = False  # the folder no longer is a run folder of this cache (renamed, linked out)

    # helpers
    def pick_file(self) -> Path:
        names = [path.name for path in self.folder.iterdir()] if self.folder.is_dir() else []
        if not names:
            return self.folder / self.rng.choice(["state.json", "config.json", "history.csv"])
        # the records are what is parsed: pick them more often than the epoch files
        weights = [4 if name in ("state.json", "config.json", "history.csv") else 1 for name in names]
        return self.folder / self.rng.choices(names, weights)[0]

    def read_json(self, name: str):
        path = self.folder / name
        try:
            values = json.loads(path.read_text()) if path.is_file() else None  # never a named pipe: it blocks
            if isinstance(values, dict):
                return values
        except (OSError, ValueError, RecursionError):
            pass
        return json.loads((self.original / name).read_text())

    def write_json(self, name: str, values) -> None:
        path = self.folder / name
        remove(path)
        path.write_text(json.dumps(values, indent=1))

    def other_type(self):
        return self.rng.choice(
            ["text", "", None, [], [1, 2], {}, {"a": 1}, 1.5, 2.0, True, False, "NaN", "1e400", "\u0000",
             "x" * 10_000, "complete", "running", "damaged", "adamw", "../victim/checkpoint-0002.keras",
             "/abs/path", str(self.victim / "secret.txt")]
        )  # fmt: skip

    def odd_number(self):
        huge = [10**30, -(10**30), 10**400, -(10**400), 2**63, 2**64, 1e308, -1e308]
        non_finite = [float("nan"), float("inf"), float("-inf")]
        small = [-1, 0, 1, 3, 499, 500, 501, 1.5, -0.0, 1e-320]
        return self.rng.choice(self.rng.choices([huge, non_finite, small], [4, 2, 4])[0])

    def file_name(self, key: str) -> str:
        kind, suffix = ("checkpoint", "keras") if key == "checkpoint" else ("predictions", "npz")
        return self.rng.choice(
            [
                f"../victim/{kind}-0002.{suffix}",
                f"../../victim/{kind}-0002.{suffix}",
                f"{kind}-0002.{suffix}/../../../victim/{kind}-0002.{suffix}",
                str(self.victim / f"{kind}-0002.{suffix}"),
                "/abs/path",
                "/etc/passwd",
                f"{kind}-0001.{suffix}",
                f"{kind}-0003.{suffix}",
                f"{kind}-9999.{suffix}",
                f"{kind}-0002.{suffix}\n",
                f"{kind}-002.{suffix}",
                "checkpoint-0002.keras" if kind == "predictions" else "predictions-0002.npz",
                "state.json",
                "config.json",
                "",
                ".",
                "..",
                ".lock",
            ]
        )

    # the mutations: each changes the folder and returns what it did
    def truncate(self) -> str:
        path = self.pick_file()
        if not path.is_file() or path.is_symlink():
            return self.delete_file(path)
        size = path.stat().st_size
        length = self.rng.choice([0, self.rng.randrange(max(size, 1)), max(size - self.rng.randrange(1, 100), 0)])
        with open(path, "rb") as stream:
            head = stream.read(length)
        remove(path)
        path.write_bytes(head)
        return f"truncate {path.name} to {length} of {size} bytes"

    def flip_bytes(self) -> str:
        path = self.pick_file()
        if not path.is_file() or path.is_symlink():
            return self.delete_file(path)
        own(path)
        size = path.stat().st_size
        if size == 0:
            path.write_bytes(bytes([self.rng.randrange(256)]))
            return f"write one byte into the empty {path.name}"
        positions = []
        with open(path, "r+b") as stream:
            for _ in range(self.rng.randint(1, 8)):
                # A zip's directory is at its end: aim there half of the time.
                end = self.rng.random() < 0.5
                position = size - 1 - self.rng.randrange(min(size, 70_000)) if end else self.rng.randrange(size)
                stream.seek(position)
                byte = stream.read(1)[0]
                stream.seek(position)
                stream.write(bytes([byte ^ self.rng.randrange(1, 256)]))
                positions.append(position)
        return f"flip bytes {positions} of {path.name}"

    def delete_file(self, path: Path | None = None) -> str:
        path = path or self.pick_file()
        remove(path)
        return f"delete {path.name}"

    def file_to_folder(self) -> str:
        path = self.pick_file()
        remove(path)
        path.mkdir()
        (path / "inside.txt").write_text("x")
        return f"replace {path.name} by a folder"

    def file_to_link(self) -> str:
        path = self.pick_file()
        name = path.name if path.name != ".lock" else "secret.txt"
        target = self.rng.choice(
            [
                self.victim / name,  # a valid copy of the same file, outside the cache
                Path("../../victim") / name,  # the same, as a relative link
                self.victim / "new-file",  # nothing there yet: writing through it would create it
                self.victim,
            ]
        )
        remove(path)
        path.symlink_to(target)
        return f"replace {path.name} by a link to {target}"

    def json_value(self) -> str:
        """Any field of state.json or config.json (or an unknown one) gets a value of another type."""
        name = self.rng.choice(["state.json", "state.json", "config.json"])
        values = self.read_json(name)
        key = self.rng.choice([*values, "format_version", "unknown_field"])
        values[key] = self.other_type()
        self.write_json(name, values)
        return f"{name}: {key} = {_short(values[key])}"

    def json_number(self) -> str:
        """A number field gets a huge, negative, fractional or non-finite number (JSON's NaN, Infinity)."""
        name = self.rng.choice(["state.json", "state.json", "config.json"])
        values = self.read_json(name)
        numeric = [key for key, value in values.items() if type(value) in (int, float)]
        key = self.rng.choice(numeric or ["epochs_done"])
        values[key] = self.odd_number()
        self.write_json(name, values)
        return f"{name}: {key} = {_short(values[key])}"

    def json_drop(self) -> str:
        name = self.rng.choice(["state.json", "config.json"])
        values = self.read_json(name)
        key = self.rng.choice(list(values))
        del values[key]
        self.write_json(name, values)
        return f"{name}: drop {key}"

    def json_document(self) -> str:
        name = self.rng.choice(["state.json", "config.json"])
        document = self.rng.choice(["[]", '"text"', "1", "null", "NaN", "{", "", "[" * 100_000, "\xff\xfe", "{}"])
        remove(self.folder / name)
        (self.folder / name).write_text(document, errors="surrogateescape")
        return f"{name} holds {_short(document)}"

    def state_file_name(self) -> str:
        key = self.rng.choice(["checkpoint", "predictions"])
        values = self.read_json("state.json")
        values[key] = self.file_name(key)
        self.write_json("state.json", values)
        return f"state.json: {key} = {values[key]!r}"

    def state_rollback(self) -> str:
        """A consistent state one epoch back (history.csv keeps its second row: not yet committed). A finished
        run keeps only its last epoch's files, so epoch 1's are copies of the trained run's epoch 2 files."""
        for kind, suffix in (("checkpoint", "keras"), ("predictions", "npz")):
            remove(self.folder / f"{kind}-0001.{suffix}")
            shutil.copyfile(self.original / f"{kind}-0002.{suffix}", self.folder / f"{kind}-0001.{suffix}")
        values = self.read_json("state.json")
        values.update(epochs_done=1, checkpoint="checkpoint-0001.keras", predictions="predictions-0001.npz")
        self.write_json("state.json", values)
        return "state.json: back to epoch 1"

    def state_running(self) -> str:
        values = self.read_json("state.json")
        pid = self.rng.choice([os.getpid(), 1, 2**62, 999_999_999, 0, -5])
        host = self.rng.choice([os.uname().nodename, "elsewhere", None])
        values.update(status="running", pid=pid, host=host)
        self.write_json("state.json", values)
        return f"state.json: running, pid {pid}, host {host}"

    def history_cell(self) -> str:
        lines = self.history_lines()
        if len(lines) < 2:
            return self.history_raw()
        row = self.rng.randrange(1, len(lines))
        cells = lines[row].split(",")
        column = self.rng.choice([0, self.rng.randrange(len(cells))])  # the epoch column is parsed as integers
        value = self.rng.choice(
            self.rng.choice(
                [
                    ["9" * 400, "-" + "9" * 400, "1e400", "18446744073709551616", "9223372036854775808"],
                    ["nan", "NaN", "inf", "-inf", ""],
                    ["abc", "0x1F", "True", "None", "\x00", '"2"', " 3 ", "1,5"],
                    ["-1", "0", "1.5", "2.0", "-0", "1e-400", "3"],
                ]
            )
        )
        cells[column] = value
        lines[row] = ",".join(cells)
        self.write_history(lines)
        return f"history.csv: row {row} column {column} = {value[:12]!r}"

    def history_columns(self) -> str:
        lines = self.history_lines()
        if not lines:
            return self.history_raw()
        choice = self.rng.choice(["extra", "drop", "rename", "swap"])
        rows = [line.split(",") for line in lines]
        column = self.rng.randrange(len(rows[0]))
        if choice == "extra":
            rows = [rows[0] + ["extra"]] + [row + [self.rng.choice(["1", "x", ""])] for row in rows[1:]]
        elif choice == "drop":
            rows = [row[:column] + row[column + 1 :] for row in rows]
        elif choice == "rename":
            rows[0][column] = self.rng.choice(["EPOCH", "other", "", rows[0][column] + " "])
        else:
            other = self.rng.randrange(len(rows[0]))
            for row in rows:
                if max(column, other) < len(row):
                    row[column], row[other] = row[other], row[column]
        self.write_history([",".join(row) for row in rows])
        return f"history.csv: {choice} column {column}"

    def history_rows(self) -> str:
        lines = self.history_lines()
        if len(lines) < 2:
            return self.history_raw()
        choice = self.rng.choice(["drop", "duplicate", "swap", "junk", "short", "blank"])
        if choice == "drop":
            del lines[self.rng.randrange(1, len(lines))]
        elif choice == "duplicate":
            lines.insert(1, lines[1])
        elif choice == "swap" and len(lines) > 2:
            lines[1], lines[2] = lines[2], lines[1]
        elif choice == "junk":
            lines.insert(self.rng.randrange(1, len(lines) + 1), "junk,,,")
        elif choice == "short":
            lines[-1] = ",".join(lines[-1].split(",")[:3])
        else:
            lines.insert(1, "")
        self.write_history(lines)
        return f"history.csv: {choice} rows"

    def history_raw(self) -> str:
        path = self.folder / "history.csv"
        text = (self.original / "history.csv").read_bytes()
        choice = self.rng.choice(["bom", "crlf", "nul", "binary", "header only", "empty", "latin-1", "huge"])
        data = {
            "bom": b"\xef\xbb\xbf" + text,
            "crlf": text.replace(b"\n", b"\r\n"),
            "nul": text + b"\x00" * 10,
            "binary": bytes(self.rng.randrange(256) for _ in range(300)),
            "header only": text.splitlines(keepends=True)[0],
            "empty": b"",
            "latin-1": text.replace(b"epoch", b"\xe9poch", 1),
            "huge": text + b"3," + b"9" * 5000 + b"\n",
        }[choice]
        remove(path)
        path.write_bytes(data)
        return f"history.csv: {choice}"

    def history_lines(self) -> list[str]:
        try:
            if (self.folder / "history.csv").is_file():  # never a named pipe: it blocks
                return (self.folder / "history.csv").read_text().splitlines()
        except (OSError, UnicodeDecodeError):
            pass
        return (self.original / "history.csv").read_text().splitlines()

    def write_history(self, lines: list[str]) -> None:
        path = self.folder / "history.csv"
        remove(path)
        path.write_text("\n".join(lines) + "\n")

    def stray_files(self) -> str:
        choice = self.rng.choice(["checkpoint", "tmp", "folder", "link"])
        if choice == "checkpoint":
            (self.folder / "checkpoint-0003.keras").write_bytes(b"not a zip")
        elif choice == "tmp":
            (self.folder / ".tmp-abc-state.json").write_text("{")
        elif choice == "folder":
            (self.folder / "sub" / "deeper").mkdir(parents=True, exist_ok=True)
        elif not (self.folder / "outside").exists():
            (self.folder / "outside").symlink_to(self.victim)
        return f"add a stray {choice}"

    def empty_folder(self) -> str:
        for path in list(self.folder.iterdir()):
            remove(path)
        return "empty the run folder"

    # the NumPy files' contents, and the lock file
    def npz_arrays(self, name: str) -> dict:
        """The arrays of ``name`` in the folder, or of the trained run's file if they cannot be read."""
        for folder in (self.folder, self.original):
            if not (folder / name).is_file():  # never a named pipe: it blocks
                continue
            try:
                with np.load(folder / name, allow_pickle=False) as archive:
                    return {key: archive[key] for key in archive.files}
            except Exception:  # noqa: BLE001 (a damaged file: try the original)
                continue
        return {}

    def write_npz(self, name: str, arrays: dict) -> None:
        path = self.folder / name
        remove(path)
        with open(path, "wb") as stream:
            np.savez(stream, **arrays)  # object arrays are pickled: the store must never unpickle them

    def npz_content(self) -> str:
        """An array of a predictions, map or features file gets a value, shape or type that does not fit."""
        name = self.rng.choice(NPZ_FILES)
        arrays = self.npz_arrays(name)
        if not arrays:
            return self.delete_file(self.folder / name)
        key = self.rng.choice(sorted(arrays))
        change = self.rng.choice(["value", "value", "value", "non-finite", "shape", "dtype", "epoch", "drop", "extra"])
        arrays[key] = self.changed_array(np.asarray(arrays[key]), change, key)
        if change == "drop":
            del arrays[key]
        elif change == "extra":
            arrays["extra"] = np.zeros(3)
        self.write_npz(name, arrays)
        return f"{name}: {change} of {key}"

    def changed_array(self, array: np.ndarray, change: str, key: str) -> np.ndarray:
        rng = self.rng
        if change == "epoch" or array.ndim == 0:
            return np.asarray(rng.choice([0, 1, 3, 9999, -1, 2**40, [2, 2], 2.5]))
        if change == "non-finite" and array.dtype.kind == "f":
            array = array.astype(np.float64)
            array.flat[rng.randrange(array.size)] = rng.choice([float("nan"), float("inf"), float("-inf")])
            return array
        if change in ("value", "non-finite"):
            wide = array.astype(np.float64 if array.dtype.kind == "f" else np.int64)
            position = rng.randrange(wide.size)
            if rng.random() < 0.2 and wide.ndim == 1 and wide.size > 1:  # a repeated index, label or class
                wide[1] = wide[0]
            elif wide.dtype.kind == "f":
                wide.flat[position] = rng.choice([-1.0, -0.0, 1.5, 2.0, 1e30, 0.5])
            else:
                wide.flat[position] = rng.choice([-1, 10, 77, 200, 255, 9_999, 10_000, 10**6, 2**31 - 1, -(2**31)])
            return wide
        if change == "shape":
            options = [array[:-1], array[:0], array[np.newaxis], array.ravel(), np.concatenate([array, array[:1]])]
            if array.ndim == 2:
                options += [array.T, np.concatenate([array, array[:, :1]], axis=1), array[:, :3]]
            return rng.choice(options)
        if change == "dtype":
            kind = rng.choice([np.float16, np.float64, np.int8, np.uint64, np.bool_, np.complex64, "U3", object])
            return array.astype(kind)
        return array

    def npz_header_lie(self) -> str:
        """A member whose .npy header claims a huge array over a few bytes (NumPy would allocate it whole)."""
        name = self.rng.choice(NPZ_FILES)
        arrays = self.npz_arrays(name) or {"epoch": np.int32(2)}
        key = self.rng.choice(sorted(arrays))
        shape = self.rng.choice([(10**9, 10), (2**40,), (10**6, 10**6), (10_000, 10, 10**5)])
        lie = io.BytesIO()
        np.lib.format.write_array_header_1_0(lie, {"descr": "<f4", "fortran_order": False, "shape": shape})
        lie.write(b"\0" * 64)
        path = self.folder / name
        remove(path)
        with zipfile.ZipFile(path, "w") as archive:
            for member, array in arrays.items():
                data = io.BytesIO()
                np.save(data, array)
                archive.writestr(f"{member}.npy", lie.getvalue() if member == key else data.getvalue())
        return f"{name}: {key}'s header claims shape {shape}"

    def lock_file(self) -> str:
        """The run's .lock becomes a link (to a file, a folder, nothing yet), a folder or a named pipe."""
        path = self.folder / ".lock"
        remove(path)
        choice = self.rng.choice(["link to a file", "link to a folder", "dangling link", "folder", "pipe"])
        self.replace_entry(path, choice, "secret.txt")
        return f".lock: {choice}"

    def replace_entry(self, path: Path, choice: str, copy: str) -> None:
        """Put what ``choice`` names where ``path`` was (removed): a link to the victim's ``copy``, to the
        victim folder or to nothing yet (following it would create a file beside the cache), a folder or a
        named pipe; "delete" leaves nothing."""
        if choice in ("link to a file", "link to a copy"):
            path.symlink_to(self.victim / copy)
        elif choice == "link to a folder":
            path.symlink_to(self.victim)
        elif choice == "dangling link":
            path.symlink_to(self.victim / "new-file")
        elif choice == "folder":
            path.mkdir()
        elif choice == "pipe":
            os.mkfifo(path)

    def file_to_pipe(self) -> str:
        path = self.pick_file()
        remove(path)
        os.mkfifo(path)  # opening it to read blocks until a writer comes: nothing may open it so
        return f"replace {path.name} by a named pipe"

    def tensorboard_files(self) -> str:
        """Damage the run's TensorBoard files: a file truncated, flipped, deleted, made a pipe or a link out
        of the cache; a split's folder or the whole folder made a link or a file; an event file for an epoch
        never committed."""
        root = self.folder / "tensorboard"
        files = (
            sorted(path for path in root.rglob("*") if path.is_file() and not path.is_symlink())
            if root.is_dir()
            else []
        )
        choice = self.rng.choice(["truncate", "flip", "delete", "pipe", "link", "split", "folder", "extra"])
        if choice in ("truncate", "flip", "delete", "pipe", "link") and files:
            path = self.rng.choice(files)
            data = path.read_bytes()
            remove(path)
            if choice == "truncate":
                path.write_bytes(data[: self.rng.randrange(max(len(data), 1))])
            elif choice == "flip" and data:
                position = self.rng.randrange(len(data))
                path.write_bytes(data[:position] + bytes([data[position] ^ 0x5A]) + data[position + 1 :])
            elif choice == "pipe":
                os.mkfifo(path)
            elif choice == "link":
                path.symlink_to(self.victim / "secret.txt")
            return f"tensorboard: {choice} {path.relative_to(self.folder)}"
        if choice == "split" and root.is_dir():
            split = root / self.rng.choice(["train", "test", "validation"])
            remove(split)
            self.replace_entry(split, self.rng.choice(["link to a folder", "dangling link", "pipe"]), "secret.txt")
            return f"tensorboard: {split.name} replaced"
        if choice == "extra" and (root / "test").is_dir():
            (root / "test" / "events.out.tfevents.0007.scalars").write_bytes(b"an epoch never committed")
            return "tensorboard: an event file of epoch 7"
        remove(root)
        if self.rng.random() < 0.5:
            root.symlink_to(self.victim)
            return "tensorboard: a link to the victim folder"
        root.write_text("not a folder")
        return "tensorboard: a file"

    # mutations after which the folder is no longer a run of this cache (only ever the last one)
    def rename_folder(self) -> str:
        name = self.rng.choice([".hidden", "has space", "-dash", "x" * 120, "bad:name"])
        self.folder.rename(self.folder.with_name(name))
        self.not_a_run = True
        return f"rename the run folder to {name!r}"

    def folder_to_link(self) -> str:
        outside = self.victim / "linked-run"
        shutil.move(self.folder, outside)
        self.folder.symlink_to(outside)
        self.not_a_run = True
        return "move the run folder beside the cache and link it back"

    def folder_to_file(self) -> str:
        shutil.rmtree(self.folder)
        self.folder.write_text("not a folder")
        self.not_a_run = True
        return "replace the run folder by a file"


MUTATIONS = [
    (Case.truncate, 4),
    (Case.flip_bytes, 4),
    (Case.delete_file, 2),
    (Case.file_to_folder, 1),
    (Case.file_to_link, 2),
    (Case.json_value, 4),
    (Case.json_number, 6),
    (Case.json_drop, 1),
    (Case.json_document, 1),
    (Case.state_file_name, 3),
    (Case.state_rollback, 1),
    (Case.state_running, 1),
    (Case.history_cell, 3),
    (Case.history_columns, 2),
    (Case.history_rows, 2),
    (Case.history_raw, 1),
    (Case.stray_files, 1),
    (Case.empty_folder, 0.3),
    (Case.npz_content, 6),
    (Case.npz_header_lie, 1),
    (Case.lock_file, 1.5),
    (Case.file_to_pipe, 1),
    (Case.tensorboard_files, 3),
]
# The files the page reads come first and twice; the previous epoch's predictions count after a rollback.
NPZ_FILES = (
    *("predictions-0002.npz", "map-0002.npz", "map-0001.npz", "features-0002.npz") * 2,
    "predictions-0001.npz",
)
LAST_MUTATIONS = [Case.rename_folder, Case.folder_to_link, Case.folder_to_file]


def mutate(case: Case) -> None:
    """Apply 1-3 random mutations; one case in 25 ends with the folder moved out of the way."""
    functions, weights = zip(*MUTATIONS, strict=True)
    for _ in range(case.rng.choice([1, 1, 2, 2, 3])):
        case.done.append(case.rng.choices(functions, weights)[0](case))
    if case.rng.random() < 0.04:
        case.done.append(case.rng.choice(LAST_MUTATIONS)(case))


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):  # a file, a link, a named pipe
        path.unlink()


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


def make_victim(folder: Path, original: Path) -> None:
    """Files beside the cache that mutated runs point at: valid copies of a run's files, and a secret."""
    folder.mkdir()
    for name in ("state.json", "config.json", "history.csv", "predictions-0002.npz"):
        shutil.copyfile(original / name, folder / name)
    # A finished run keeps only its last epoch's files; the victim's epoch-1 predictions are a valid copy of them.
    shutil.copyfile(original / "predictions-0002.npz", folder / "predictions-0001.npz")
    for name in ("checkpoint-0002.keras", "checkpoint-0001.keras"):
        with zipfile.ZipFile(folder / name, "w") as archive:
            archive.writestr("config.json", "{}")
    (folder / "secret.txt").write_text("not for the run cache")


# --- checks -------------------------------------------------------------------------------------------------
def check_run(run, store: RunStore, train_labels: np.ndarray) -> list[str]:
    """What is wrong with one listed run (nothing, for a valid run or a damaged one with a reason)."""
    problems = []
    if not isinstance(run.status, RunStatus):
        return [f"status {run.status!r} is not a RunStatus"]
    summary = run.summary()
    if summary["run_id"] != run.run_id or summary["status"] != run.status.value:
        problems.append(f"summary {summary} does not match the run")
    if run.damaged:
        if not isinstance(run.problem, str) or not run.problem.strip():
            problems.append(f"damaged without a reason: {run.problem!r}")
        return problems
    if run.problem is not None:
        problems.append(f"status {run.status} but a problem {run.problem!r}")
    state, config, history = run.state, run.config, run.history
    if state is None or config is None or history is None:
        return [*problems, f"valid but state {state!r}, config {config!r}, history {history!r}"]
    epochs = state.epochs_done
    if type(epochs) is not int or not 0 <= epochs <= 500 or type(state.target_epochs) is not int:
        problems.append(f"epochs_done {epochs!r}, target_epochs {state.target_epochs!r}")
    if not isinstance(config, TrainConfig):
        problems.append(f"config {config!r}")
    if list(history.columns) != list(HISTORY_COLUMNS) or len(history) != epochs:
        problems.append(f"history of {len(history)} rows with columns {list(history.columns)}")
    elif not all(pd.api.types.is_numeric_dtype(history[column]) for column in HISTORY_COLUMNS):
        problems.append(f"history has non-numeric columns: {history.dtypes.to_dict()}")
    elif list(history["epoch"]) != list(range(1, epochs + 1)) or not all(
        math.isfinite(value) for value in history.drop(columns=list(OPTIONAL_HISTORY_COLUMNS)).to_numpy().ravel()
    ):
        problems.append(f"history values: {history.to_dict('list')}")
    if not isinstance(state.updated, float) or not math.isfinite(state.updated):
        problems.append(f"updated {state.updated!r}")
    for path in (run.checkpoint_path, run.predictions_path):
        if epochs and (path is None or path.parent != run.path or path.is_symlink() or not path.is_file()):
            problems.append(f"epoch file {path} is not a file in the run folder")
    if epochs:
        problems += check_arrays(run, store, train_labels)
    return problems


def check_arrays(run, store: RunStore, train_labels: np.ndarray) -> list[str]:
    """A valid run's predictions load and fit it; its maps and features bank load and fit, or are
    reported with a RunError (never another exception)."""
    try:
        predictions = store.load_predictions(run)
    except Exception as error:  # noqa: BLE001 (the listing checked them: any exception is the finding)
        return [f"listed valid, but load_predictions raised {type(error).__name__}: {error}"]
    problems = []
    probabilities, indices, labels = (predictions[key] for key in ("probabilities", "indices", "labels"))
    count = run.state.eval_images if run.state.eval_images is not None else len(probabilities)
    if (
        probabilities.shape != (count, 10)
        or not np.isfinite(probabilities).all()
        or not np.allclose(probabilities.sum(axis=1), 1, atol=0.011)
        or indices.shape != (count,)
        or len(np.unique(indices)) != count
        or not ((indices >= 0) & (indices < 10_000)).all()
        or labels.shape != (count,)
        or labels.max(initial=0) > 9
    ):
        problems.append(f"predictions that do not fit the run: {probabilities.shape}, {indices[:5]}, {labels[:5]}")
    for epoch in artefacts.feature_map_epochs(run):
        try:
            feature_map = artefacts.load_feature_map(store, run, epoch)
        except RunError:
            continue
        except Exception as error:  # noqa: BLE001 (any other exception is the finding)
            problems.append(f"load_feature_map({epoch}) raised {type(error).__name__}: {error}")
            continue
        if not np.isin(feature_map["indices"], indices).all() or feature_map["predicted"].max(initial=0) > 9:
            problems.append(f"the map of epoch {epoch} does not fit the run")
    try:
        bank = artefacts.feature_bank(run, fake_features, train_labels=train_labels)
    except RunError:
        return problems
    except Exception as error:  # noqa: BLE001 (any other exception is the finding)
        return [*problems, f"feature_bank raised {type(error).__name__}: {error}"]
    if bank.features.ndim != 2 or len(bank.features) != len(bank.indices) or not np.isfinite(bank.features).all():
        problems.append(f"a features bank of shape {bank.features.shape}")
    return problems


def check_event_files(run, store: RunStore) -> list[str]:
    """Whatever became of its TensorBoard files, the run reads as it did, and ``sync`` (what the next commit
    and ``export-tensorboard`` do) either writes them all, with nothing left to write after, or says why."""
    try:
        event_files.sync(store, run)
    except RunError as error:
        return [] if run.damaged else [f"sync of a valid run failed: {error}"]
    except Exception as error:  # noqa: BLE001 (any other exception is the finding)
        return [f"sync raised {type(error).__name__}: {error}"]
    if run.damaged:
        return ["sync of a damaged run returned"]
    problems = [] if store.load(run.run_id).status is run.status else ["sync changed the run's status"]
    root = event_files.folder_of(run)
    expected = [root / event_files.HPARAMS_FILE] + [
        root / split / f"events.out.tfevents.{epoch:04d}.scalars"
        for split in ("train", "test")
        for epoch in range(1, run.epochs_done + 1)
    ]
    problems += [f"sync left no {path.relative_to(run.path)}" for path in expected if not is_file(path)]
    again = event_files.sync(store, run)
    if again.written or again.removed:
        problems.append(f"a second sync still changed files: {again}")
    return problems


def is_file(path: Path) -> bool:
    return path.is_file() and not path.is_symlink() and not any(part.is_symlink() for part in path.parents)


def fake_features(indices: np.ndarray) -> np.ndarray:
    """Penultimate features as a bank's ``compute`` would give them (no model is loaded here)."""
    return np.random.default_rng(len(indices)).standard_normal((len(indices), 16))


def run_case(
    number: int, real_folder: Path, run_id: str, base: Path, train_labels: np.ndarray
) -> tuple[str, list[str], list[str]]:
    """Mutate one copy of the run and check it: (outcome, mutations, problems found)."""
    case_dir = base / f"case-{number}"
    cache, victim = case_dir / "cache", case_dir / "victim"
    cache.mkdir(parents=True)
    make_victim(victim, real_folder)
    folder = cache / run_id
    copy_run(real_folder, folder)
    case = Case(random.Random(SEED + number), folder, victim, real_folder)
    mutate(case)
    before = snapshot(victim)
    problems: list[str] = []
    outcome = "not a run"
    with RECORDER.recording():
        try:
            store = RunStore(cache)
            runs = store.list_runs()
            listed = {run.run_id: run for run in runs}
            if case.not_a_run:
                if run_id in listed:
                    problems.append(f"a folder that is no run of the cache is listed: {listed[run_id]}")
            elif list(listed) != [run_id]:
                problems.append(f"listed {list(listed)}, expected [{run_id!r}]")
            for run in runs:
                problems += check_run(run, store, train_labels)
                outcome = "damaged" if run.damaged else "valid"
                problems += check_event_files(run, store)
            output = io.StringIO()
            with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
                code = cli(["--cache-dir", str(cache), "runs"])
            if code != 0 or any(run_id_ not in output.getvalue() for run_id_ in listed):
                problems.append(f"'resnet runs' returned {code}: {output.getvalue()!r}")
            try:
                store.delete(run_id)
            except RunError:
                if run_id in listed and not store.path_for(run_id).is_dir():
                    problems.append("delete raised RunError but the run folder is gone")
            else:
                if folder.exists() or folder.is_symlink() or run_id in {run.run_id for run in store.list_runs()}:
                    problems.append("delete returned but the run is still there")
        except Exception as error:  # noqa: BLE001 (any exception is the finding)
            problems.append(f"raised {type(error).__name__}: {error}")
    problems += [f"touched outside the cache: {event}" for event in RECORDER.outside(cache)]
    if snapshot(victim) != before:
        problems.append("the victim folder beside the cache changed")
    if sorted(path.name for path in case_dir.iterdir()) != ["cache", "victim"]:
        problems.append(f"new entries beside the cache: {sorted(path.name for path in case_dir.iterdir())}")
    shutil.rmtree(case_dir)
    return outcome, case.done, problems


def cli(argv: list[str]) -> int:
    from resnet.__main__ import main

    try:
        return main(argv)
    except SystemExit as exit_:  # argparse
        return exit_.code


# --- the cache's other files: sweep records, their locks, .sweeps itself, the precision record ---------------
RECORD, SWEEP_LOCK, PRECISION_RECORD = ".sweeps/study.json", ".sweeps/study.lock", ".precision.json"
BF16 = Hardware(gpus=(), gpu_compute_capability=None, cpu_name="Fuzz CPU", cpu_bf16=True)  # auto reads the record
MEASUREMENT = measurement_values(depth=18, batch_size=64)


def precision_key() -> str:
    candidates = precision_record.candidates_for(BF16)
    return precision_record.record_key(BF16, depth=TINY.depth, batch_size=TINY.batch_size, candidates=candidates)


def make_cache_files(cache: Path, run_id: str, victim: Path) -> None:
    """A sweep record whose second trial names the run, its lock file, a precision record for the run's
    depth and batch size; and copies of the records in the victim folder, for links to point at."""
    sweeps = SweepStore(cache)
    sweeps.save(new_sweep("study", {"epochs": (1, TINY.epochs)}, TINY).with_run_id(1, run_id))
    (cache / SWEEP_LOCK).write_text("")
    precision_record.remember(precision_record.record_path(cache), precision_key(), Measurement.from_dict(MEASUREMENT))
    (victim / "sweeps").mkdir()
    shutil.copyfile(cache / RECORD, victim / "sweeps" / "study.json")
    shutil.copyfile(cache / RECORD, victim / "study.json")
    shutil.copyfile(cache / PRECISION_RECORD, victim / "precision.json")


class CacheCase(Case):
    """The cache folder itself: mutations of its sweep record, the record's lock, .sweeps and .precision.json."""

    def document(self, name: str):
        """The JSON of ``name`` in the cache if it is a readable object, else the victim's valid copy."""
        path = self.folder / name
        try:
            if path.is_file() and not path.is_symlink():
                values = json.loads(path.read_text())
                if isinstance(values, dict):
                    return values
        except (OSError, ValueError, RecursionError):
            pass
        copy = {RECORD: "study.json", PRECISION_RECORD: "precision.json"}.get(name, "study.json")
        return json.loads((self.victim / copy).read_text())

    def save_text(self, name: str, text: str) -> None:
        path = self.folder / name
        if not path.parent.is_dir() or path.parent.is_symlink():  # .sweeps was replaced by an earlier mutation
            remove(path.parent)
            path.parent.mkdir()
        remove(path)
        path.write_text(text, errors="surrogateescape")

    def slot(self, values):
        """A random (container, key, where) found by walking down from the top of ``values``."""
        container, key, where, node = values, "unknown_field", "unknown_field", values
        first = True
        while isinstance(node, (dict, list)) and node and (first or self.rng.random() < 0.65):
            key = self.rng.choice(list(node)) if isinstance(node, dict) else self.rng.randrange(len(node))
            container, node, first = node, node[key], False
            where = key if where == "unknown_field" else f"{where}/{key}"
        return container, key, where

    def record_value(self) -> str:
        """Any value anywhere in the sweep record or the precision record gets another type or an odd number."""
        name = self.rng.choice([RECORD, RECORD, PRECISION_RECORD])
        values = self.document(name)
        container, key, where = self.slot(values)
        value = self.other_type() if self.rng.random() < 0.5 else self.odd_number()
        container[key] = value
        self.save_text(name, json.dumps(values))
        return f"{name}: {where} = {_short(value)}"

    def record_bulk(self) -> str:
        """A list or object made as long as a record may be: 100,000 values, 1,000 trials, 2,000 entries."""
        name = self.rng.choice([RECORD, RECORD, PRECISION_RECORD])
        values = self.document(name)
        if name == PRECISION_RECORD:
            values["entries"] = {f"key {number}": MEASUREMENT for number in range(2000)}
            what = "2,000 entries"
        elif self.rng.random() < 0.5:
            values.setdefault("grid", {})["epochs"] = [1] * 100_000
            what = "grid epochs of 100,000 values"
        else:
            values["trials"] = [*values.get("trials", [None])[:1]] * 1000
            what = "1,000 trials"
        self.save_text(name, json.dumps(values))
        return f"{name}: {what}"

    def record_deep(self) -> str:
        """A value nested 33, 1,000 or 100,000 levels deep (json.loads recurses; so does every repr)."""
        name = self.rng.choice([RECORD, PRECISION_RECORD])
        values = self.document(name)
        container, key, where = self.slot(values)
        container[key] = "DEEP"
        depth = self.rng.choice([33, 1000, 100_000])
        self.save_text(name, json.dumps(values).replace('"DEEP"', "[" * depth + "]" * depth, 1))
        return f"{name}: {where} nested {depth} deep"

    def record_run_ids(self) -> str:
        """Two trials name one run, or a trial names a run id that escapes the cache."""
        values = self.document(RECORD)
        trials = values.get("trials") if isinstance(values.get("trials"), list) else []
        if len(trials) < 2 or not all(isinstance(trial, dict) for trial in trials):
            return self.record_value()
        run_id = self.rng.choice([trials[1].get("run_id"), "../victim", "/abs", "..", "x" * 200, "", 7])
        trials[0]["run_id"] = run_id
        self.save_text(RECORD, json.dumps(values))
        return f"{RECORD}: trial 1 names run {_short(run_id)}"

    def record_document(self) -> str:
        name = self.rng.choice([RECORD, PRECISION_RECORD])
        text = self.rng.choice(
            ["[]", '"text"', "1", "null", "NaN", "{", "", "[" * 100_000, "\xff\xfe", "{}", "x" * 1_100_000]
        )
        self.save_text(name, text)
        return f"{name} holds {_short(text)}"

    def file_kind(self) -> str:
        """The record, its lock or the precision record becomes a link (to a valid copy outside the cache,
        a folder, nothing yet), a folder, a named pipe, or goes."""
        name = self.rng.choice([RECORD, SWEEP_LOCK, SWEEP_LOCK, PRECISION_RECORD])
        path = self.folder / name
        if not path.parent.is_dir() or path.parent.is_symlink():
            return self.sweeps_folder()
        remove(path)
        copy = {RECORD: "study.json", PRECISION_RECORD: "precision.json"}.get(name, "secret.txt")
        choice = self.rng.choice(["link to a copy", "link to a folder", "dangling link", "folder", "pipe", "delete"])
        self.replace_entry(path, choice, copy)
        return f"{name}: {choice}"

    def sweeps_folder(self) -> str:
        """.sweeps becomes a link to a folder of valid records outside the cache, a file, a pipe, or goes."""
        path = self.folder / ".sweeps"
        remove(path)
        choice = self.rng.choice(["link out", "link out", "file", "pipe", "delete"])
        if choice == "link out":
            path.symlink_to(self.victim / "sweeps")
        elif choice == "file":
            path.write_text("{}")
        elif choice == "pipe":
            os.mkfifo(path)
        return f".sweeps: {choice}"

    def stray_sweep_files(self) -> str:
        folder = self.folder / ".sweeps"
        if not folder.is_dir() or folder.is_symlink():
            return self.sweeps_folder()
        choice = self.rng.choice(["folder record", "bad name", "temporary", "link record", "pipe lock"])
        if choice == "folder record":
            (folder / "other.json").mkdir(exist_ok=True)
        elif choice == "bad name":
            (folder / "bad name.json").write_text("{}")
        elif choice == "temporary":
            (folder / ".tmp-x-study.json").write_text("{")
        elif choice == "link record" and not os.path.lexists(folder / "linked.json"):
            (folder / "linked.json").symlink_to(self.victim / "study.json")
        elif not os.path.lexists(folder / "other.lock"):
            os.mkfifo(folder / "other.lock")
        return f".sweeps: stray {choice}"


CACHE_MUTATIONS = [
    (CacheCase.record_value, 6),
    (CacheCase.record_bulk, 1),
    (CacheCase.record_deep, 1),
    (CacheCase.record_run_ids, 2),
    (CacheCase.record_document, 1),
    (CacheCase.file_kind, 3),
    (CacheCase.sweeps_folder, 1),
    (CacheCase.stray_sweep_files, 1),
]


def mutate_cache(case: CacheCase) -> None:
    functions, weights = zip(*CACHE_MUTATIONS, strict=True)
    for _ in range(case.rng.choice([1, 1, 2, 3])):
        case.done.append(case.rng.choices(functions, weights)[0](case))


def check_sweeps(cache: Path, run_id: str) -> tuple[str, list[str]]:
    """Every way the CLI and the app read and lock sweeps: (outcome of the record, problems found)."""
    problems, sweeps = [], SweepStore(cache)
    listings = sweeps.list_sweeps()
    outcome = "gone"
    for listing in listings:
        if listing.sweep is None:
            if not isinstance(listing.problem, str) or not listing.problem.strip():
                problems.append(f"{listing.name} damaged without a reason: {listing.problem!r}")
            outcome = "folder refused" if listing.name == ".sweeps" else "damaged"
            continue
        sweep, outcome = listing.sweep, "valid" if listing.name == "study" else outcome
        run_ids = [trial.run_id for trial in sweep.trials if trial.run_id is not None]
        if len(sweep.trials) > 64 or len(set(run_ids)) != len(run_ids) or not math.isfinite(sweep.updated):
            problems.append(f"an impossible sweep is listed valid: {listing.name}, {len(sweep.trials)} trials")
    output = io.StringIO()
    with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
        code = cli(["--cache-dir", str(cache), "sweeps"])
    if code != 0:
        problems.append(f"'resnet sweeps' returned {code}: {output.getvalue()[:300]!r}")
    for name in ["study", *{listing.name for listing in listings}]:
        try:
            requested_sweep(sweeps, name, {})
        except (SweepError, ConfigError):
            pass  # damaged, missing, or a name that is no sweep's: reported with a message
        try:
            with sweeps.locked(name):
                if not sweeps.is_running(name):
                    problems.append(f"sweep {name} is locked but not seen as running")
        except SweepError:
            pass
    return outcome, problems


def check_precision(cache: Path) -> tuple[str, list[str]]:
    """What the train command and the sidebar read of the precision record, and a measurement written
    into it: (whether the run's entry was read, problems found)."""
    path, key, problems = precision_record.record_path(cache), precision_key(), []
    entries = precision_record.read_record(path)
    if not all(isinstance(value, Measurement) and value.precision in value.speeds for value in entries.values()):
        problems.append(f"read_record gave {entries!r:.200}")
    chosen = precision.resolve_precision("auto", BF16, depth=TINY.depth, batch_size=TINY.batch_size, cache_dir=cache)
    if chosen.source not in (Source.MEASURED, Source.NOT_MEASURED):
        problems.append(f"auto precision from the record: {chosen!r} ({chosen.source})")
    precision_record.remember(path, "fuzz", Measurement.from_dict(MEASUREMENT))  # never raises: at worst logged
    return ("read" if key in entries else "ignored"), problems


def run_cache_case(number: int, real_folder: Path, run_id: str, base: Path) -> tuple[tuple[str, str], list, list]:
    """Mutate one cache's sweep record, lock, .sweeps and precision record and check them:
    ((sweep outcome, precision outcome), mutations, problems found)."""
    case_dir = base / f"cache-case-{number}"
    cache, victim = case_dir / "cache", case_dir / "victim"
    cache.mkdir(parents=True)
    make_victim(victim, real_folder)
    copy_run(real_folder, cache / run_id)
    make_cache_files(cache, run_id, victim)
    case = CacheCase(random.Random(CACHE_SEED + number), cache, victim, real_folder)
    mutate_cache(case)
    before = snapshot(victim)
    problems: list[str] = []
    outcomes = ("not checked", "not checked")
    with RECORDER.recording():
        try:
            sweep_outcome, found = check_sweeps(cache, run_id)
            precision_outcome, more = check_precision(cache)
            outcomes, problems = (sweep_outcome, precision_outcome), found + more
        except Exception as error:  # noqa: BLE001 (any exception is the finding)
            problems.append(f"raised {type(error).__name__}: {error}")
    problems += [f"touched outside the cache: {event}" for event in RECORDER.outside(cache)]
    if snapshot(victim) != before:
        problems.append("the victim folder beside the cache changed")
    if sorted(path.name for path in case_dir.iterdir()) != ["cache", "victim"]:
        problems.append(f"new entries beside the cache: {sorted(path.name for path in case_dir.iterdir())}")
    shutil.rmtree(case_dir)
    return outcomes, case.done, problems


# --- the tests ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cases", [CASES], ids=[f"{CASES}-mutated-runs"])
def test_mutated_runs_are_listed_shown_and_deleted_safely(real_run, train_labels, tmp_path, cases):
    real_folder, run_id = real_run
    original = snapshot(real_folder)
    counts = {"damaged": 0, "valid": 0, "not a run": 0}
    failures = []
    for number in range(cases):
        outcome, done, problems = run_case(number, real_folder, run_id, tmp_path, train_labels)
        counts[outcome] += 1
        if problems:
            failures.append(f"case {number} (seed {SEED + number}): {'; '.join(done)}\n    " + "\n    ".join(problems))
    summary = (
        f"fuzz: {cases} mutations tried through the store, the CLI and Delete: {counts['damaged']} damaged, "
        f"{counts['valid']} still valid, {counts['not a run']} no longer a run folder; {len(failures)} failed"
    )
    print(f"\n{summary}")
    assert snapshot(real_folder) == original, "a mutation reached the trained run through a hard link"
    assert not failures, summary + "\n" + "\n".join(failures[:15])
    assert counts["damaged"] > cases // 2 and counts["valid"] > 0, summary  # the mutations do reach both sides


@pytest.mark.parametrize("flips", [PREDICTION_FLIPS], ids=[f"{PREDICTION_FLIPS}-flipped-files"])
def test_damaged_predictions_files_are_reported_not_raised(real_run, tmp_path, flips):
    """The page reads the shown run's predictions: 1-4 flipped bytes must give all arrays or a RunError.

    A zip's checksums catch most flips; the rest hit its directory (an unknown compression method, a
    member said to be encrypted, fewer members, a truncated .npy header...), which NumPy and zipfile
    report with many exception types.
    """
    real_folder, run_id = real_run
    copy_run(real_folder, tmp_path / "cache" / run_id)
    store = RunStore(tmp_path / "cache")
    run = store.load(run_id)
    path = run.predictions_path
    original = path.read_bytes()
    rng = random.Random(PREDICTION_SEED)
    counts = {"read": 0, "reported": 0}
    failures = []
    for number in range(flips):
        data = bytearray(original)
        positions = [rng.randrange(len(data)) for _ in range(rng.randint(1, 4))]
        for position in positions:
            data[position] ^= rng.randrange(1, 256)
        path.write_bytes(bytes(data))
        try:
            predictions = store.load_predictions(run)
        except RunError:
            counts["reported"] += 1
        except Exception as error:  # noqa: BLE001 (any other exception is the finding)
            failures.append(f"flip {number} at {positions}: {type(error).__name__}: {error}")
        else:
            counts["read"] += 1
            if not PREDICTION_KEYS <= set(predictions):
                failures.append(f"flip {number} at {positions}: only {sorted(predictions)}")
    summary = (
        f"fuzz: {flips} flipped predictions files tried: {counts['reported']} reported as damaged, "
        f"{counts['read']} still readable; {len(failures)} failed"
    )
    print(f"\n{summary}")
    assert not failures, summary + "\n" + "\n".join(failures[:15])


@pytest.mark.parametrize("sessions", [APP_SESSIONS], ids=[f"{APP_SESSIONS * APP_RUNS}-mutated-runs"])
def test_app_page_lists_shows_and_deletes_mutated_runs(real_run, tmp_path, monkeypatch, sessions):

    from app import services

    real_folder, real_id = real_run
    counts = {"damaged": 0, "valid": 0, "not a run": 0}
    for session in range(sessions):
        base = tmp_path / f"app-{session}"
        cache, victim = base / "cache", base / "victim"
        cache.mkdir(parents=True)
        make_victim(victim, real_folder)
        good = f"{real_id}-good"
        copy_run(real_folder, cache / good)
        cases = {}
        for number in range(APP_RUNS):
            run_id = f"{real_id}-m{number:02d}"
            copy_run(real_folder, cache / run_id)
            case = Case(random.Random(APP_SEED + 100 * session + number), cache / run_id, victim, real_folder)
            mutate(case)
            cases[run_id] = case
        before = snapshot(victim)
        expected = {good} | {run_id for run_id, case in cases.items() if not case.not_a_run}
        monkeypatch.setenv("RESNET_CACHE_DIR", str(cache))

        at = AppTest.from_file(str(APP), default_timeout=60).run()
        where = f"app session {session}, mutations {{{', '.join(f'{k}: {c.done}' for k, c in cases.items())}}}"
        assert_page(at, where)
        table = runs_table(at)
        assert set(table["run"]) == expected, where
        for row in table.itertuples():
            counts[row.status if row.status == "damaged" else "valid"] += row.run != good
            assert row.status in {status.value for status in RunStatus}, where
            if row.status == "damaged":
                assert row.problem_or_note.startswith("DAMAGED: ") and len(row.problem_or_note) > 9, where
        counts["not a run"] += len(cases) + 1 - len(expected)

        # Show a few valid and damaged runs in every view.
        valid = [row.run for row in table.itertuples() if row.status != "damaged" and row.run != good]
        damaged = [row.run for row in table.itertuples() if row.status == "damaged"]
        for run_id in valid[:2] + damaged[:1]:
            at.session_state["shown_run"] = run_id
            at.run()
            assert_page(at, f"{where}, showing {run_id}")

        # Delete one damaged and one valid run through the page (with its confirmation).
        for run_id in damaged[:1] + valid[:1]:
            at.selectbox(key="manage_run").set_value(run_id).run()
            at.button(key="delete_run").click().run()
            at.button(key="confirm_delete_yes").click().run()
            assert_page(at, f"{where}, deleting {run_id}")
            messages = [element.value for element in [*at.success, *at.error, *at.warning]]
            deleted = not (cache / run_id).exists()
            assert (deleted and f"Deleted run {run_id}." in messages) or (
                not deleted and any(f"Could not delete run {run_id}" in text for text in messages)
            ), (where, messages)
        assert snapshot(victim) == before, f"{where}: the victim folder beside the cache changed"
        assert sorted(path.name for path in base.iterdir()) == ["cache", "victim"], where
        services._manager_for.clear()  # this cache's JobManager
        shutil.rmtree(base)
    tried = sessions * APP_RUNS
    print(
        f"\nfuzz: {tried} mutations tried through the app's page: {counts['damaged']} damaged, "
        f"{counts['valid']} still valid, {counts['not a run']} no longer a run folder"
    )
    assert sum(counts.values()) == tried, counts


def assert_page(at, where: str) -> None:
    assert not at.exception, (where, [exception.value for exception in at.exception])


def runs_table(at) -> pd.DataFrame:
    """The Runs tab's table (the shown run's results table, if any, comes first)."""
    tables = [element.value for element in at.dataframe if "problem_or_note" in element.value.columns]
    assert len(tables) == 1, [element.value.columns for element in at.dataframe]
    return tables[0]


@pytest.mark.parametrize("cases", [CACHE_CASES], ids=[f"{CACHE_CASES}-mutated-caches"])
def test_mutated_sweep_records_locks_and_precision_records_are_reported_safely(real_run, tmp_path, cases):
    real_folder, run_id = real_run
    sweeps, records, failures = collections.Counter(), collections.Counter(), []
    for number in range(cases):
        (sweep_outcome, precision_outcome), done, problems = run_cache_case(number, real_folder, run_id, tmp_path)
        sweeps[sweep_outcome] += 1
        records[precision_outcome] += 1
        if problems:
            seed = CACHE_SEED + number
            failures.append(f"cache case {number} (seed {seed}): {'; '.join(done)}\n    " + "\n    ".join(problems))
    summary = (
        f"fuzz: {cases} caches tried with 1-3 mutations of the sweep record, its lock, .sweeps and "
        f".precision.json: the record {sweeps['valid']} valid, {sweeps['damaged']} damaged, "
        f"{sweeps['folder refused']} behind a refused .sweeps, {sweeps['gone']} gone; the run's precision entry "
        f"read in {records['read']}, ignored in {records['ignored']}; {len(failures)} failed"
    )
    print(f"\n{summary}")
    assert not failures, summary + "\n" + "\n".join(failures[:15])
    assert all(sweeps[outcome] for outcome in ("valid", "damaged", "folder refused")), summary
    assert records["read"] and records["ignored"], summary


PAGE_MUTATIONS = [  # what Why? and the map read: the NumPy files, the lock, a pipe in place of a file
    (Case.npz_content, 8),
    (Case.npz_header_lie, 1),
    (Case.flip_bytes, 1),
    (Case.lock_file, 1),
    (Case.file_to_pipe, 1),
    (Case.delete_file, 1),
]


def mutate_for_page(case: Case) -> None:
    functions, weights = zip(*PAGE_MUTATIONS, strict=True)
    for _ in range(case.rng.choice([1, 2])):
        case.done.append(case.rng.choices(functions, weights)[0](case))


def explain_and_map(at, where: str) -> tuple[str, int, int]:
    """Open Why? on the shown run's first sample image and look at its feature maps: (how Why? ended, as
    the page says it; maps drawn; maps reported as unreadable)."""
    drawn = len([title for title in charts(at) if title and title.startswith("Epoch ")])
    reported = sum("cannot be read" in text for text in texts(at.warning) if text.startswith("The map of epoch"))
    buttons = [button for button in at.button if str(button.key or "").startswith("why_sample_")]
    if not buttons:
        return "no grid", drawn, reported
    buttons[0].click().run()
    assert_page(at, f"{where}, Why?")
    explained = "nearest training images" in "\n".join(texts(at.markdown))
    outcome = "explained" if explained else "reported" if at.warning else "nothing shown"
    at.button(key="close_sample").click().run()
    assert_page(at, f"{where}, closing Why?")
    return outcome, drawn, reported


@pytest.mark.parametrize("sessions", [EXPLAIN_SESSIONS], ids=[f"{EXPLAIN_SESSIONS * EXPLAIN_RUNS}-mutated-runs"])
def test_app_page_explains_and_maps_runs_with_mutated_files(real_run, dataset_dir, tmp_path, monkeypatch, sessions):
    """Why? and the feature map on runs whose predictions, maps, features or lock are mutated, in a cache
    whose sweep record and precision record are mutated too; every thread of the page is audited."""
    from app import services

    real_folder, real_id = real_run
    counts = collections.Counter()
    for session in range(sessions):
        base = tmp_path / f"explain-{session}"
        cache, victim = base / "cache", base / "victim"
        cache.mkdir(parents=True)
        make_victim(victim, real_folder)
        good = f"{real_id}-good"
        copy_run(real_folder, cache / good)
        make_cache_files(cache, good, victim)
        cache_case = CacheCase(random.Random(EXPLAIN_SEED + 100 * session), cache, victim, real_folder)
        mutate_cache(cache_case)
        cases = {}
        for number in range(EXPLAIN_RUNS):
            run_id = f"{real_id}-{number + 2}"
            copy_run(real_folder, cache / run_id)
            cases[run_id] = Case(
                random.Random(EXPLAIN_SEED + 100 * session + number + 1), cache / run_id, victim, real_folder
            )
            mutate_for_page(cases[run_id])
        before = snapshot(victim)
        monkeypatch.setenv("RESNET_CACHE_DIR", str(cache))
        where = (
            f"explain session {session}: {cache_case.done}, {{{', '.join(f'{k}: {c.done}' for k, c in cases.items())}}}"
        )
        with RECORDER.recording(every_thread=True):
            at = AppTest.from_file(str(APP), default_timeout=120).run()
            assert_page(at, where)
            table = runs_table(at)
            assert set(table["run"]) == {good, *cases}, where
            valid = [row.run for row in table.itertuples() if row.status != "damaged" and row.run != good]
            valid.sort(key=lambda run_id: not any("map-" in done or "features-" in done for done in cases[run_id].done))
            damaged = [row.run for row in table.itertuples() if row.status == "damaged"]
            counts["damaged"] += len(damaged)
            counts["valid"] += len(valid)
            for run_id in [good, *valid[:1], *damaged[:1]]:
                at.session_state["shown_run"] = run_id
                at.run()
                assert_page(at, f"{where}, showing {run_id}")
                why, drawn, reported = explain_and_map(at, f"{where}, showing {run_id}")
                counts[f"Why? {why}"] += 1
                counts["maps drawn"] += drawn
                counts["maps reported"] += reported
        outside = RECORDER.outside(cache, readable=(dataset_dir, PROJECT_FILES, Path("/etc")))
        assert not outside, f"{where}: touched outside the cache: {outside[:10]}"
        assert snapshot(victim) == before, f"{where}: the victim folder beside the cache changed"
        assert sorted(path.name for path in base.iterdir()) == ["cache", "victim"], where
        services._manager_for.clear()
        shutil.rmtree(base)
    tried = sessions * EXPLAIN_RUNS
    print(
        f"\nfuzz: {tried} runs with mutated arrays or locks (and {sessions} mutated sweep and precision records) "
        f"through the page with Why? and the feature map: {counts['damaged']} damaged, {counts['valid']} still "
        f"valid; Why? {counts['Why? explained']} explained, {counts['Why? reported']} reported, "
        f"{counts['Why? no grid']} without a grid (damaged); feature maps {counts['maps drawn']} drawn, "
        f"{counts['maps reported']} reported unreadable"
    )
    assert counts["Why? explained"] >= sessions, counts  # the good run is explained on every page
    assert counts["maps reported"] and counts["maps drawn"], counts  # the mutations reach the map view
