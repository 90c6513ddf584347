"""vitsq.outputs: checked paths, the writer lock, temporary siblings moved into place.

The oracle is the file system: after every failure (exception, lost race, SIGTERM) the previous
output must be byte-identical and no temporary sibling or lock may remain.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import SHARED
from vitsq.errors import OutputError
from vitsq.outputs import atomic_output, check_output, write_text

TINY = SHARED / "fixtures" / "vosk_vits2"


def _tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones included) by relative path, with its bytes."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def _artifact(folder: Path, kind: str = "torch-eager", payload: bytes = b"old weights") -> Path:
    folder.mkdir(parents=True)
    (folder / "vitsq.json").write_text(json.dumps({"kind": kind}))
    (folder / "model.pt").write_bytes(payload)
    return folder


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


# ----------------------------------------------------------------------------- checks
def test_odd_output_paths_are_one_line_errors(tmp_path):
    (tmp_path / "somedir").mkdir()
    cases = {
        tmp_path / "somedir": "must end in .onnx",
        tmp_path / "x.mp3": "must end in .onnx",
        tmp_path / "noext": "must end in .onnx",
        Path("/proc/x.onnx"): "not writable",
        tmp_path / "a.onnx" / "b.onnx": None,  # parent is made on write: fine
    }
    for path, msg in cases.items():
        if msg is None:
            assert check_output(path, suffixes=(".onnx",)) == path
            continue
        with pytest.raises(OutputError, match=msg) as e:
            check_output(path, suffixes=(".onnx",))
        assert "\n" not in str(e.value)
    (tmp_path / "file.onnx").write_bytes(b"x")
    with pytest.raises(OutputError, match="is not a folder"):
        check_output(tmp_path / "file.onnx" / "y.onnx", suffixes=(".onnx",))
    with pytest.raises(OutputError, match="must be a folder, not a .onnx"):
        check_output(tmp_path / "new.onnx", kind="dir")
    with pytest.raises(OutputError, match="is a folder: give a file path"):
        check_output(tmp_path / "somedir", force=True)
    assert not _hidden(tmp_path)  # the writability probe removed itself


def test_force_never_replaces_what_vitsq_did_not_write(tmp_path):
    mine = tmp_path / "photos"
    mine.mkdir()
    (mine / "cat.jpg").write_bytes(b"\xff\xd8 cat")
    before = _tree(mine)
    for force in (False, True):
        with pytest.raises(OutputError, match="did not write" if force else "already exists"):
            with atomic_output(mine, kind="dir", force=force) as tmp:
                (tmp / "vitsq.json").write_text("{}")
    with pytest.raises(OutputError, match="is a folder"):
        write_text(mine, "x", force=True)
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="must end in .json"):
        write_text(tmp_path / "notes.txt", "x", suffixes=(".json",), force=True)
    assert _tree(mine) == before and (tmp_path / "notes.txt").read_text() == "mine"
    assert not _hidden(tmp_path)


# ----------------------------------------------------------------------------- atomicity
@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt()])
def test_failure_inside_the_block_keeps_the_old_output(tmp_path, exc):
    f = tmp_path / "model.onnx"
    f.write_bytes(b"old model")
    art = _artifact(tmp_path / "art")
    before = _tree(art)
    with pytest.raises(type(exc)):
        with atomic_output(f, suffixes=(".onnx",), force=True) as tmp:
            assert tmp.parent == tmp_path and tmp.name.endswith(".onnx") and tmp.name.startswith(".")
            tmp.write_bytes(b"half a new model")
            raise exc
    with pytest.raises(type(exc)):
        with atomic_output(art, kind="dir", force=True) as tmp:
            (tmp / "model.onnx").write_bytes(b"new kind")
            raise exc
    new = tmp_path / "sub" / "deeper" / "out.json"
    with pytest.raises(type(exc)):
        with atomic_output(new, suffixes=(".json",)) as tmp:
            raise exc
    assert f.read_bytes() == b"old model" and _tree(art) == before
    assert not (tmp_path / "sub").exists()  # folders made for the failed output are removed
    assert not _hidden(tmp_path)


def test_force_replaces_a_vitsq_artifact_whole(tmp_path):
    art = _artifact(tmp_path / "art", kind="torch-eager")
    with atomic_output(art, kind="dir", force=True) as tmp:
        (tmp / "model.onnx").write_bytes(b"onnx")
        (tmp / "vitsq.json").write_text(json.dumps({"kind": "onnx"}))
    assert _tree(art) == {"model.onnx": b"onnx", "vitsq.json": b'{"kind": "onnx"}'}  # no model.pt left
    with pytest.raises(RuntimeError, match="nothing was written"):
        with atomic_output(tmp_path / "empty.json", suffixes=(".json",)):
            pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]


# ----------------------------------------------------------------------------- writer lock
def test_second_writer_of_one_path_is_refused(tmp_path):
    target = tmp_path / "out.json"
    with atomic_output(target, suffixes=(".json",)) as tmp:
        with pytest.raises(OutputError, match="already being written"):
            with atomic_output(target, suffixes=(".json",), force=True):
                pass
        tmp.write_text("first")
    assert target.read_text() == "first"
    assert not _hidden(tmp_path)


_RACE = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from vitsq.errors import OutputError
    from vitsq.outputs import atomic_output
    target, go = Path(sys.argv[1]), Path(sys.argv[2])
    while not go.exists():
        time.sleep(0.001)
    try:
        with atomic_output(target, suffixes=(".json",)) as tmp:
            tmp.write_text(str(os.getpid()))
            time.sleep(1.0)
    except OutputError as exc:
        print("REFUSED", exc)
        sys.exit(3)
    print("WROTE")
""")


def test_two_processes_racing_for_one_path(tmp_path):
    target, go = tmp_path / "out.json", tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", _RACE, str(target), str(go)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    time.sleep(1.0)  # both started and waiting (imports done)
    go.touch()
    results = [(p.wait(timeout=60), *p.communicate()) for p in procs]
    codes = sorted(r[0] for r in results)
    assert codes == [0, 3], results
    winner = next(p for p, r in zip(procs, results) if r[0] == 0)
    loser = next(r for r in results if r[0] == 3)
    assert target.read_text() == str(winner.pid)
    assert "Traceback" not in loser[2] and ("is writing" in loser[1] or "already exists" in loser[1])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["go", "out.json"]


def test_a_killed_writers_leftovers_are_cleared(tmp_path):
    dead = _dead_pid()
    target = tmp_path / "voice.onnx"
    target.write_bytes(b"old voice")
    (tmp_path / ".voice.onnx.vitsq-lock").write_text(str(dead))
    (tmp_path / f".voice.onnx.vitsq-tmp-{dead}-0badc0de.onnx").write_bytes(b"partial")
    with atomic_output(target, suffixes=(".onnx",), force=True) as tmp:
        tmp.write_bytes(b"new voice")
    assert target.read_bytes() == b"new voice"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["voice.onnx"]
    # killed between moving the old artifact aside and moving the new one in: it is put back
    art = tmp_path / "art"
    _artifact(tmp_path / f".art.vitsq-tmp-{dead}-old-0badc0de")
    (tmp_path / f".art.vitsq-tmp-{dead}-0badc0df").mkdir()
    with pytest.raises(OutputError, match="already exists"):
        with atomic_output(art, kind="dir"):
            pass
    assert _tree(art) == {"model.pt": b"old weights", "vitsq.json": b'{"kind": "torch-eager"}'}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art", "voice.onnx"]


# ----------------------------------------------------------------------------- SIGTERM
def test_sigterm_during_export_keeps_the_old_output(tmp_path):
    """``vitsq export --force`` killed with SIGTERM while writing: the CLI unwinds, the previous
    folder is byte-identical and nothing of the new one is left."""
    out = _artifact(tmp_path / "vosk", kind="vosk-dir")
    before = _tree(out)
    cmd = [sys.executable, "-m", "vitsq.cli", "export", str(TINY / "tiny_G_1.pth"), "--config",
           str(TINY / "tiny_config.json"), "--format", "vosk-dir", "-o", str(out), "--force"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not any(p.name.startswith(".vosk.vitsq-tmp-") for p in tmp_path.iterdir()):  # new folder being written
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.005)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert _tree(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vosk"]
