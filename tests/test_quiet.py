"""A quiet TensorFlow start-up (data/quiet.py): no CUDA/oneDNN/CPU chatter on stderr unless asked for
with --verbose, while a real failure still says what went wrong."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from resnet.config import TrainConfig
from resnet.store.runs import RunStore
from resnet.training.jobs import JobManager, JobState

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CHATTER = ("cuInit", "absl::InitializeLog", "cudart_stub", "cpu_feature_guard", "oneDNN custom operations")
TINY_FLAGS = ["--subset", "200", "--eval-subset", "200", "--epochs", "1", "--depth", "18", "--batch-size", "64"]


def run_python(*args, cache_dir=None, extra_path=None, timeout=600, **environment):
    env = {key: value for key, value in os.environ.items() if key != "RESNET_VERBOSE"} | environment
    if cache_dir is not None:
        env["RESNET_CACHE_DIR"] = str(cache_dir)
    if extra_path is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(PROJECT_ROOT), str(extra_path)])
    return subprocess.run(
        [sys.executable, *args], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def chatter_in(text: str) -> list[str]:
    return [word for word in CHATTER if word in text]


@pytest.mark.slow  # a fresh CLI process trains
def test_a_tiny_cli_training_prints_no_start_up_chatter_and_says_where_it_trains(cache_dir, dataset_dir):
    result = run_python("-m", "resnet", "train", *TINY_FLAGS, cache_dir=cache_dir)
    assert result.returncode == 0, result.stderr
    assert chatter_in(result.stderr) == [], result.stderr
    assert "beyond the usual start-up notes" not in result.stderr
    lines = result.stderr.splitlines()
    where = [line for line in lines if line.startswith("Training on ")]
    assert len(where) == 1 and (where[0].startswith("Training on CPU (") or where[0].startswith("Training on GPU"))
    assert any(line.startswith("auto precision: ") for line in lines)
    assert "complete: trained 1 epoch" in result.stdout


@pytest.mark.slow  # a fresh CLI process trains
def test_verbose_shows_what_tensorflow_printed(cache_dir, dataset_dir):
    result = run_python("-m", "resnet", "train", *TINY_FLAGS, "--verbose", cache_dir=cache_dir)
    assert result.returncode == 0, result.stderr
    assert "absl::InitializeLog" in result.stderr  # printed by every TensorFlow start-up
    if "GPU" not in next(line for line in result.stderr.splitlines() if line.startswith("Training on ")):
        assert "cudart_stub" in result.stderr or "cuInit" in result.stderr  # no CUDA on this machine


def test_importing_the_trainer_and_probing_devices_is_quiet():
    code = "import resnet.training.trainer; from resnet.core.hardware import detect_hardware; print(detect_hardware().device_label)"
    result = run_python("-c", code)
    assert result.returncode == 0 and result.stdout.strip(), result.stderr
    assert result.stderr == ""
    verbose = run_python("-c", code, RESNET_VERBOSE="1")
    assert "absl::InitializeLog" in verbose.stderr


def test_the_app_script_runs_quietly(cache_dir):
    code = textwrap.dedent(
        """
        from streamlit.testing.v1 import AppTest
        at = AppTest.from_file("streamlit_app.py", default_timeout=300).run()
        assert not at.exception, at.exception
        print("ran")
        """
    )
    result = run_python("-c", code, cache_dir=cache_dir)
    assert result.returncode == 0 and "ran" in result.stdout, result.stderr
    assert chatter_in(result.stderr) == [], result.stderr


def fake_tensorflow(folder: Path, *, fails: bool) -> Path:
    """A stand-in ``tensorflow`` that prints like a broken one to descriptor 2 (and fails to import)."""
    package = folder / "tensorflow"
    package.mkdir(parents=True)
    body = [
        "import os",
        "os.write(2, b'WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\\n')",
        "os.write(2, b'E0000 00:00:1.0 1 dso_loader.cc:1] Could not load libcudnn.so.9: the driver is broken\\n')",
    ]
    if fails:
        body.append("raise ImportError('fake TensorFlow: cannot start')")
    (package / "__init__.py").write_text("\n".join(body) + "\n")
    return folder


def test_a_failing_tensorflow_import_is_not_swallowed(tmp_path):
    result = run_python("-c", "import data, tensorflow", extra_path=fake_tensorflow(tmp_path, fails=True))
    assert result.returncode == 1
    assert "import tensorflow failed; TensorFlow printed meanwhile:" in result.stderr
    assert "the driver is broken" in result.stderr  # what it printed
    assert "ImportError: fake TensorFlow: cannot start" in result.stderr  # and the traceback


def test_unknown_start_up_lines_are_counted_not_shown(tmp_path):
    result = run_python("-c", "import data, tensorflow", extra_path=fake_tensorflow(tmp_path, fails=False))
    assert result.returncode == 0, result.stderr
    assert "the driver is broken" not in result.stderr and "absl" not in result.stderr
    assert "TensorFlow printed 1 line beyond the usual start-up notes; run with --verbose" in result.stderr
    shown = run_python(
        "-c", "import data, tensorflow", extra_path=fake_tensorflow(tmp_path / "2", fails=False), RESNET_VERBOSE="1"
    )
    assert "the driver is broken" in shown.stderr


@pytest.fixture
def broken_tensorflow_for_children(tmp_path, monkeypatch):
    """Child processes started from here import a TensorFlow that fails (this process keeps the real one)."""
    monkeypatch.setenv("PYTHONPATH", str(fake_tensorflow(tmp_path / "fake", fails=True)))


def test_a_training_child_that_cannot_start_tensorflow_reports_why(
    cache_dir, dataset_dir, broken_tensorflow_for_children
):
    manager = JobManager(RunStore(cache_dir))
    manager.start(TrainConfig(epochs=1, batch_size=64, train_subset=200, eval_subset=200, depth=18))
    assert manager.wait(timeout=300)
    snapshot = manager.snapshot()
    assert snapshot.state is JobState.FAILED
    assert snapshot.error == "ImportError: fake TensorFlow: cannot start"
