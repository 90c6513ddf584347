"""Turn results (dataclass dicts with numpy scalars, paths, infinities) into strict JSON values."""

from __future__ import annotations

import hashlib
import math
import re
import shlex
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np


def to_jsonable(obj: Any, inf_as_string: bool = False) -> Any:
    """Recursively convert ``obj`` for ``json.dumps(..., allow_nan=False)``.

    NaN becomes null. Infinities become null, or ``"inf"``/``"-inf"`` with ``inf_as_string``
    (evaluation results keep SNR = inf for identical audio; benchmarks have no meaningful inf).
    """
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v, inf_as_string) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v, inf_as_string) for v in obj]
    if isinstance(obj, (float, np.floating)):
        x = float(obj)
        if math.isnan(x):
            return None
        if math.isinf(x):
            return ("inf" if x > 0 else "-inf") if inf_as_string else None
        return x
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, Path):
        return str(obj)
    if obj is None or isinstance(obj, (str, int, bool)):
        return obj
    return str(obj)


# Result files travel between machines: they name files, never where a machine keeps them.
_ABS_PATH = re.compile(r"(?<![\w.~/-])(?:~|[A-Za-z]:)?(?:[/\\][^/\\\s'\"`,;:()\[\]{}<>|]+)+[/\\]"
                       r"([^/\\\s'\"`,;:()\[\]{}<>|]+)")
#: Keys whose strings are spoken or transcribed text, never paths: left as they are.
TEXT_KEYS = frozenset({"texts", "text", "hypothesis", "reference_normalized", "hypothesis_normalized"})


def portable_str(text: str) -> str:
    """``text`` with every absolute path (two or more components) shortened to ``.../NAME``."""
    return _ABS_PATH.sub(lambda m: ".../" + m.group(1), text)


def without_paths(obj: Any, skip: frozenset[str] = TEXT_KEYS) -> Any:
    """Recursively replace absolute paths in the strings of ``obj`` (see :func:`portable_str`);
    values under the ``skip`` keys (sentences, transcripts) are kept verbatim."""
    if isinstance(obj, dict):
        return {k: (v if k in skip else without_paths(v, skip)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [without_paths(v, skip) for v in obj]
    if isinstance(obj, str):
        return portable_str(obj)
    return obj


def file_sha256(path: str | Path) -> str | None:
    """sha256 of a file, or of a folder's files (relative names + contents); None if unreadable."""
    p = Path(path)
    try:
        files = [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file())
        h = hashlib.sha256()
        for f in files:
            h.update((f.name if f == p else f.relative_to(p).as_posix()).encode())
            with open(f, "rb") as fp:
                for chunk in iter(lambda: fp.read(1 << 20), b""):
                    h.update(chunk)
        return h.hexdigest() if files else None
    except OSError:
        return None


def describe_sources(desc: dict[str, Any]) -> dict[str, Any]:
    """A model description fit for a result file: each path-valued ``source``/``path``/``directory``
    entry becomes its file name plus a ``<key>_sha256`` of the contents; other strings lose any
    absolute path they contain."""
    out = dict(desc)
    for key in ("source", "path", "directory", "artifact"):
        v = out.get(key)
        if isinstance(v, (str, Path)) and str(v) and (Path(str(v)).is_absolute() or Path(str(v)).exists()):
            p = Path(str(v))
            out[key] = p.name
            digest = file_sha256(p) if p.exists() else None
            if digest:
                out[f"{key}_sha256"] = digest
    return without_paths(out)


def command_line(argv: Sequence[str], prog: str = "vitsq") -> str:
    """The shell command ``prog argv...`` as one quoted string, absolute paths shortened."""
    return shlex.join([prog, *(portable_str(str(a)) for a in argv)])


def invoked_command(args: Any, prog: str = "vitsq") -> str | None:
    """The command line that ran this subcommand, for result files.

    ``args.argv`` when the CLI recorded it; else ``sys.argv`` when this process is the ``vitsq``
    program (None when vitsq.cli.main was called from other code with its own argv).
    """
    argv = getattr(args, "argv", None)
    if argv is None:
        exe = Path(sys.argv[0]).name if sys.argv else ""
        if exe != prog and not (exe == "__main__.py" and Path(sys.argv[0]).parent.name == prog):
            return None
        argv = sys.argv[1:]
    return command_line(argv, prog)
