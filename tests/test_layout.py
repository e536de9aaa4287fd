"""The layout's size and import rules, read from the source (no training, well under a second).

- no module over 500 lines, no class over 250, no function over 60, widget declarations excepted
  (``WIDGET_DECLARATIONS``: a sidebar form is one long list of widgets, and splitting it only scatters it);
- an import inside a function is only there to keep a heavy module (TensorFlow, Keras, Ray, or a module
  of ours that imports them at once) out of a process that does not need it, and a comment on its line or
  the line above says so.

The layer contract itself is ``lint-imports`` ([tool.importlinter] in pyproject.toml), run by
scripts/test.sh before pytest.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted(
    [*ROOT.glob("resnet/**/*.py"), *ROOT.glob("app/**/*.py"), *ROOT.glob("data/**/*.py"), ROOT / "streamlit_app.py"]
)
MODULE_LINES, CLASS_LINES, FUNCTION_LINES = 500, 250, 60
WIDGET_DECLARATIONS = {("app/params.py", "settings_ui")}
HEAVY = (
    "tensorflow",
    "keras",
    "ray",
    "resnet.training.trainer",
    "resnet.core.model",
    "resnet.store.event_files",  # tensorboard's protobufs and plugins: 0.1 s
    "resnet.store.projector",
    "resnet.training.tensorboard_export",
)


def _name(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _functions(tree):
    return [node for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]


def test_the_rules_read_the_project_sources():
    names = {_name(path) for path in SOURCES}
    assert {"resnet/store/runs.py", "app/params.py", "data/pipeline.py", "streamlit_app.py"} <= names


@pytest.mark.parametrize("path", SOURCES, ids=_name)
def test_modules_classes_and_functions_stay_small(path):
    text = path.read_text()
    tree = ast.parse(text)
    too_long = []
    if text.count("\n") > MODULE_LINES:
        too_long.append(f"the module has {text.count(chr(10))} lines (at most {MODULE_LINES})")
    functions = set(_functions(tree))
    for node in ast.walk(tree):
        length = getattr(node, "end_lineno", 0) - getattr(node, "lineno", 0) + 1
        if isinstance(node, ast.ClassDef) and length > CLASS_LINES:
            too_long.append(f"class {node.name}: {length} lines (at most {CLASS_LINES})")
        elif node in functions and length > FUNCTION_LINES and (_name(path), node.name) not in WIDGET_DECLARATIONS:
            too_long.append(f"function {node.name}: {length} lines (at most {FUNCTION_LINES})")
    assert not too_long, f"{_name(path)}: " + "; ".join(too_long)


@pytest.mark.parametrize("path", SOURCES, ids=_name)
def test_imports_inside_functions_keep_heavy_modules_out_and_say_so(path):
    lines = path.read_text().split("\n")
    wrong = []
    for function in _functions(ast.parse("\n".join(lines))):
        for node in ast.walk(function):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            modules = [node.module or ""] if isinstance(node, ast.ImportFrom) else [alias.name for alias in node.names]
            heavy = all(any(module == name or module.startswith(name + ".") for name in HEAVY) for module in modules)
            said = "#" in lines[node.lineno - 1] or lines[node.lineno - 2].strip().startswith("#")
            if not heavy or not said:
                why = "not a heavy module" if not heavy else "no comment says why it is imported here"
                wrong.append(f"line {node.lineno} ({', '.join(modules)}): {why}")
    assert not wrong, f"{_name(path)}: " + "; ".join(wrong)
