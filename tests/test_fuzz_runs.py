"""Fuzz the run cache: seeded random damage to a real run folder never breaks a listing or escapes the cache.

A real tiny run (ResNet-18, 2 epochs on 256 images) is trained once for this module. Each case copies its
folder into a fresh cache (checkpoints as hard links: they are 130 MB; a mutation that edits one in place
first gives the copy its own file), applies 1-3 seeded random mutations (truncate a file, flip bytes,
delete a file, give a JSON field a value of another type, a huge number, NaN, a "../" or absolute file
name, bad cells or extra columns in history.csv, a file replaced by a folder or by a link out of the
cache, an emptied or renamed run folder...) and then checks what the issue "Every answer the app gives is
true" asks:

- ``RunStore.list_runs()``, ``Run.summary()``, ``load_predictions``, ``python -m resnet runs`` and
  ``RunStore.delete`` never raise anything but ``RunError`` (delete) and list every mutated run either as
  valid, with sane fields, or as ``damaged`` with a reason;
- they open, list, rename or remove nothing outside the cache folder (Python's audit hooks see every
  file operation), and a "victim" folder beside the cache, which the mutations point at, stays unchanged;
- the app's page (AppTest) on caches holding many mutated runs and one good one shows no exception, lists
  every run, shows any of them and deletes them;
- ``load_predictions`` (which the page calls for the shown run) gives every array or a ``RunError`` for
  a predictions file with 1-4 flipped bytes: a focused loop, as the cases above rarely get to flip one.

Every case is reproducible alone: it is seeded with ``SEED + case`` and a failure names its mutations.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import random
import shutil
import sys
import threading
from pathlib import Path

import pandas as pd
import pytest
from support import FINISHED

from resnet.config import TrainConfig
from resnet.run_state import HISTORY_COLUMNS, RunStatus
from resnet.runs import RunError, RunStore

pytestmark = pytest.mark.slow  # fault injection: hundreds of damaged run folders

CASES = 400  # mutated run folders through the store, the CLI and Delete
APP_SESSIONS = 3  # app pages, each on a cache of APP_RUNS mutated runs and one good run
APP_RUNS = 20
PREDICTION_FLIPS = 1000  # byte flips of a predictions file, read back by load_predictions (cheap: no parsing)
SEED = 20240611
APP_SEED = 7_000_000
PREDICTION_SEED = 5_000_000
APP = Path(__file__).resolve().parent.parent / "streamlit_app.py"
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


class Recorder:
    """Records the paths of file operations made by one thread while ``recording`` (a hook cannot be removed)."""

    def __init__(self):
        self.thread: int | None = None
        self.events: list[tuple[str, str, str]] = []  # (event, path as given, path resolved at that moment)
        self._inside = False

    def hook(self, event: str, args: tuple) -> None:
        if self.thread != threading.get_ident() or self._inside or event not in PATH_EVENTS:
            return
        self._inside = True  # resolving a path must not record itself
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
                if isinstance(flags, int) and flags & os.O_NOFOLLOW:  # the last part of the path is not followed
                    resolved = os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))
                else:
                    resolved = os.path.realpath(path)
                self.events.append((event, path, resolved))
        finally:
            self._inside = False

    @contextlib.contextmanager
    def recording(self):
        self.events = []
        self.thread = threading.get_ident()
        try:
            yield self
        finally:
            self.thread = None

    def outside(self, root: Path) -> list[tuple[str, str, str]]:
        """Recorded operations on paths outside ``root`` (Python's own files, e.g. lazy imports, aside)."""
        root = os.path.realpath(root)
        allowed = {os.path.realpath(prefix) for prefix in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
        found = []
        for event, path, resolved in self.events:
            if resolved == root or resolved.startswith(root + os.sep):
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
def real_run(trained):
    """A run folder trained for real (the suite's finished run, trained once per session): (folder, run id)."""
    run = trained(TINY)
    assert run.status is RunStatus.COMPLETE and run.epochs_done == 2, run
    names = {path.name for path in run.path.iterdir()}
    assert {"state.json", "config.json", "history.csv", "checkpoint-0002.keras", "predictions-0002.npz"} <= names
    return run.path, run.run_id


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
            values = json.loads(path.read_text())
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
        """A consistent state one epoch back (history.csv keeps its second row: not yet committed)."""
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
            return (self.folder / "history.csv").read_text().splitlines()
        except (OSError, UnicodeDecodeError):
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
]
LAST_MUTATIONS = [Case.rename_folder, Case.folder_to_link, Case.folder_to_file]


def mutate(case: Case) -> None:
    """Apply 1-3 random mutations; one case in 25 ends with the folder moved out of the way."""
    functions, weights = zip(*MUTATIONS, strict=True)
    for _ in range(case.rng.choice([1, 1, 2, 2, 3])):
        case.done.append(case.rng.choices(functions, weights)[0](case))
    if case.rng.random() < 0.04:
        case.done.append(case.rng.choice(LAST_MUTATIONS)(case))


def remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


def make_victim(folder: Path, original: Path) -> None:
    """Files beside the cache that mutated runs point at: valid copies of a run's files, and a secret."""
    folder.mkdir()
    for name in ("state.json", "config.json", "history.csv", "predictions-0002.npz", "predictions-0001.npz"):
        shutil.copyfile(original / name, folder / name)
    import zipfile

    for name in ("checkpoint-0002.keras", "checkpoint-0001.keras"):
        with zipfile.ZipFile(folder / name, "w") as archive:
            archive.writestr("config.json", "{}")
    (folder / "secret.txt").write_text("not for the run cache")


# --- checks -------------------------------------------------------------------------------------------------
def check_run(run, store: RunStore) -> list[str]:
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
        math.isfinite(value) for value in history.drop(columns=["train_cross_entropy"]).to_numpy().ravel()
    ):
        problems.append(f"history values: {history.to_dict('list')}")
    if not isinstance(state.updated, float) or not math.isfinite(state.updated):
        problems.append(f"updated {state.updated!r}")
    for path in (run.checkpoint_path, run.predictions_path):
        if epochs and (path is None or path.parent != run.path or path.is_symlink() or not path.is_file()):
            problems.append(f"epoch file {path} is not a file in the run folder")
    if epochs:
        try:
            predictions = store.load_predictions(run)
        except RunError:
            pass  # a damaged predictions file is reported, not raised past the store
        except Exception as error:  # noqa: BLE001 (any other exception is the finding)
            problems.append(f"load_predictions raised {type(error).__name__}: {error}")
        else:
            if not PREDICTION_KEYS <= set(predictions):
                problems.append(f"predictions hold {sorted(predictions)}")
    return problems


def run_case(number: int, real_folder: Path, run_id: str, base: Path) -> tuple[str, list[str], list[str]]:
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
                problems += check_run(run, store)
                outcome = "damaged" if run.damaged else "valid"
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


# --- the tests ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cases", [CASES], ids=[f"{CASES}-mutated-runs"])
def test_mutated_runs_are_listed_shown_and_deleted_safely(real_run, tmp_path, cases):
    real_folder, run_id = real_run
    original = snapshot(real_folder)
    counts = {"damaged": 0, "valid": 0, "not a run": 0}
    failures = []
    for number in range(cases):
        outcome, done, problems = run_case(number, real_folder, run_id, tmp_path)
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
    from streamlit.testing.v1 import AppTest

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
