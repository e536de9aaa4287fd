"""JSON records of the cache read with bounded size and depth, and numbers checked without overflow.

Every JSON file the app or the CLI reads (a run's ``state.json`` and ``config.json``, a sweep record,
``.precision.json``) comes through ``read_json``: the file must be a regular file (a link is never
followed), at most ``MAX_RECORD_BYTES`` long, UTF-8, and nested at most ``MAX_DEPTH`` deep, checked by
one linear walk (``json`` itself would parse 200,000 nested brackets only to raise RecursionError, and
every later ``repr`` of a deep value recurses again). What fails raises ``RecordError`` with the reason;
each store turns it into its own damaged state (``DamagedRun``, ``DamagedSweep``, an ignored record).

``finite_number`` checks a JSON number by comparing it, never converting it first: ``float(10**400)``
raises OverflowError and ``math.isfinite(10**400)`` does too.
"""

from __future__ import annotations

import json
import os
import reprlib
import stat
import sys
from pathlib import Path

MAX_RECORD_BYTES = 1_000_000  # a run's state is about 1 KB, a 64-trial sweep record about 100 KB
MAX_DEPTH = 32  # the deepest record written is 4 levels (a sweep's trials -> trial -> config -> value)

_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 60
_SHORT.maxlist = _SHORT.maxdict = 6


class RecordError(ValueError):
    """A JSON record is missing, too large, unreadable or nested too deeply; the message says which."""


def short(value) -> str:
    """``repr(value)`` cut to a readable length (a hostile value may be a 100,000-item list)."""
    return _SHORT.repr(value)


def read_json(path: Path, *, max_bytes: int = MAX_RECORD_BYTES, max_depth: int = MAX_DEPTH):
    """The JSON value in ``path``; RecordError if it is not a regular file, too large, not UTF-8 JSON,
    or nested deeper than ``max_depth``."""
    data = read_bounded(path, max_bytes=max_bytes)
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise RecordError(f"{path.name} is unreadable ({error})") from error
    except RecursionError:
        raise RecordError(f"{path.name} is nested more than {max_depth} levels deep") from None
    if nesting_depth(value, limit=max_depth) > max_depth:
        raise RecordError(f"{path.name} is nested more than {max_depth} levels deep")
    return value


def read_bounded(path: Path, *, max_bytes: int) -> bytes:
    """The bytes of the regular file ``path`` (not followed if it is a link), at most ``max_bytes``."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        raise RecordError(f"{path.name} is missing") from None
    except OSError as error:  # ELOOP: a link; EACCES...
        what = "a link, not a file" if os.path.islink(path) else f"unreadable ({error.strerror})"
        raise RecordError(f"{path.name} is {what}") from error
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):  # before fdopen, which refuses a folder
        os.close(descriptor)
        raise RecordError(f"{path.name} is not a regular file")
    with os.fdopen(descriptor, "rb") as stream:
        try:
            data = stream.read(max_bytes + 1)
        except OSError as error:
            raise RecordError(f"{path.name} is unreadable ({error.strerror})") from error
    if len(data) > max_bytes:
        raise RecordError(f"{path.name} is larger than {max_bytes:,} bytes")
    return data


def nesting_depth(value, *, limit: int) -> int:
    """How deep lists and objects nest in ``value`` (a scalar is 0), walked without recursion; stops
    counting once past ``limit``. Linear in the number of values."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        depth += 1
        if depth > deepest:
            deepest = depth
            if deepest > limit:
                return deepest
        stack.extend((child, depth) for child in children)
    return deepest


def is_number(value) -> bool:
    """A JSON number (int or float), not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def finite_number(value, *, low: float = -sys.float_info.max, high: float = sys.float_info.max) -> bool:
    """Whether ``value`` is a number within ``low``-``high`` (so finite, and convertible to float).

    Compared, not converted: Python compares a 400-digit int with a float exactly, and NaN fails both.
    """
    return is_number(value) and low <= value <= high
