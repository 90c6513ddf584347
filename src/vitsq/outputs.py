"""Writing outputs without ever losing a user's data.

Every file or folder vitsq produces goes through :func:`atomic_output`:

1. :func:`check_output` validates the path *before* any slow work: the right extension, a parent
   that is (or can be made) a writable folder, and, when the path exists, ``force`` plus proof that
   vitsq wrote what is there (a folder with a ``vitsq.json`` manifest, or a file of the expected
   kind). An arbitrary folder is never replaced.
2. A lock file beside the target (``.NAME.vitsq-lock``, created with ``O_EXCL``) makes concurrent
   writers to one path exclusive: the second gets :class:`~vitsq.errors.OutputError` at once.
3. The content is written to a temporary sibling (``.NAME.vitsq-tmp-PID-XXXX``) and moved into
   place with ``os.replace``/``os.rename`` when complete. Interrupted at any point (Ctrl-C, SIGTERM
   through the CLI's handler, a crash), the old output is still there, untouched.

Only the temporary sibling, the lock and a replaced vitsq artifact are ever deleted.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import secrets
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Literal, Sequence

from vitsq.errors import OutputError

log = logging.getLogger(__name__)

Kind = Literal["file", "dir"]
MANIFEST = "vitsq.json"  # same name as vitsq.manifest.MANIFEST (kept import-free here)
_TMP = ".vitsq-tmp-"
_LOCK = ".vitsq-lock"


def _suffix_ok(path: Path, suffixes: Sequence[str]) -> bool:
    name = path.name.lower()
    return any(name.endswith(s.lower()) and len(name) > len(s) for s in suffixes)


def is_vitsq_artifact(path: Path) -> bool:
    """A folder vitsq wrote: it holds a ``vitsq.json`` manifest with a ``kind``."""
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and "kind" in manifest


def _nearest_existing(path: Path) -> Path:
    p = path
    while not (p.exists() or p.is_symlink()):
        if p.parent == p:
            break
        p = p.parent
    return p


def _check_writable_folder(folder: Path, target: Path) -> None:
    """Probe by creating (and removing) a file of our own: ``os.access`` lies for root and on /proc."""
    if not folder.is_dir():
        raise OutputError(f"cannot write {target}: {folder} is not a folder")
    try:
        fd = os.open(folder / f"{_TMP}probe-{os.getpid()}-{secrets.token_hex(4)}",
                     os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except OSError as exc:
        raise OutputError(f"cannot write {target}: {folder} is not writable ({exc.strerror or exc})") from exc
    os.close(fd)
    for p in folder.glob(f"{_TMP}probe-{os.getpid()}-*"):
        p.unlink(missing_ok=True)


def check_output(path: str | Path, *, kind: Kind = "file", suffixes: Sequence[str] = (),
                 force: bool = False, what: str = "output") -> Path:
    """Validate an output path before any work; return it as a ``Path``.

    ``kind``: ``"file"`` or ``"dir"``. ``suffixes``: accepted endings for a file (e.g. ``(".wav",)``).
    An existing target needs ``force`` and must be something vitsq wrote: a folder with a
    ``vitsq.json`` manifest, or a regular file with one of ``suffixes``.
    """
    if kind not in ("file", "dir"):
        raise ValueError(f"kind must be 'file' or 'dir', not {kind!r}")
    path = Path(path).expanduser()
    if not str(path).strip() or path.name in ("", ".", ".."):
        raise OutputError(f"{what} path {str(path)!r} names no file or folder")
    if kind == "file" and suffixes and not _suffix_ok(path, suffixes):
        raise OutputError(f"{what} {path} must end in {' or '.join(suffixes)}")
    if kind == "dir" and path.suffix.lower() in (".onnx", ".wav", ".pte", ".json", ".pt", ".pth"):
        raise OutputError(f"{what} {path} must be a folder, not a {path.suffix} file name")
    if path.exists() or path.is_symlink():
        if not force:
            raise OutputError(f"{what} {path} already exists: choose another path or pass --force to replace it")
        if path.is_symlink():
            raise OutputError(f"{what} {path} is a symbolic link: vitsq replaces only what it wrote; "
                              "choose another path")
        if kind == "file" and not path.is_file():
            raise OutputError(f"{what} {path} is a folder: give a file path ending in {' or '.join(suffixes) or 'a file name'}")
        if kind == "dir":
            if not path.is_dir():
                raise OutputError(f"{what} {path} is a file, not a folder: choose another path")
            if not is_vitsq_artifact(path):
                raise OutputError(f"{what} {path} is a folder vitsq did not write (no {MANIFEST}): --force only "
                                  "replaces vitsq artifacts; choose another path")
    _check_writable_folder(_nearest_existing(path.parent), path)
    return path


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _lock_path(path: Path) -> Path:
    return path.parent / f".{path.name}{_LOCK}"


def _acquire_lock(path: Path) -> Path:
    """Create the writer lock beside ``path``; a dead writer's lock (and its temp files) are cleared."""
    lock = _lock_path(path)
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                pid = int(lock.read_text().strip() or 0)
            except (OSError, ValueError):
                pid = 0
            if pid and _pid_alive(pid) and pid != os.getpid():
                raise OutputError(f"another vitsq process (pid {pid}) is writing {path}: wait for it or "
                                  "choose another path") from None
            if pid == os.getpid():
                raise OutputError(f"{path} is already being written by this process") from None
            # stale: its writer died without cleaning up (SIGKILL, power loss)
            for stale in path.parent.glob(f".{path.name}{_TMP}{pid}-*"):
                _remove(stale)
            lock.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        return lock
    raise OutputError(f"cannot take the write lock {lock}: remove it if no vitsq process is running")


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        p.unlink(missing_ok=True)


def _commit(tmp: Path, path: Path, kind: Kind, force: bool) -> None:
    exists = path.exists() or path.is_symlink()
    if exists and not force:
        raise OutputError(f"output {path} appeared while vitsq was writing it: left untouched; "
                          "choose another path or pass --force")
    if kind == "file":
        if exists:
            os.replace(tmp, path)  # atomic: readers see the old file or the new one
            return
        try:
            os.link(tmp, path)  # no-clobber: fails if another writer got there first
        except FileExistsError:
            raise OutputError(f"output {path} appeared while vitsq was writing it: left untouched") from None
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EXDEV, errno.ENOTSUP, errno.EMLINK):
                raise
            os.replace(tmp, path)  # file systems without hard links
        else:
            tmp.unlink()
        return
    if not exists:
        os.rename(tmp, path)
        return
    # replace a vitsq artifact folder: move it aside, move the new one in, then drop the old one
    old = path.parent / f".{path.name}{_TMP}{os.getpid()}-old-{secrets.token_hex(4)}"
    os.rename(path, old)
    try:
        os.rename(tmp, path)
    except BaseException:
        os.rename(old, path)
        raise
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def atomic_output(path: str | Path, *, kind: Kind = "file", suffixes: Sequence[str] = (),
                  force: bool = False, what: str = "output") -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write; move it into place when the block succeeds.

    For ``kind="dir"`` the sibling is an empty folder; for ``"file"`` it is a path (not created)
    with the same extension as ``path``, so writers that pick a format by extension still work.
    On any exception the sibling is removed and the old ``path`` (if any) is left untouched.
    """
    path = check_output(path, kind=kind, suffixes=suffixes, force=force, what=what)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = _acquire_lock(path)
    try:
        # re-check under the lock: a writer that finished just before us must not be clobbered
        check_output(path, kind=kind, suffixes=suffixes, force=force, what=what)
        ext = "".join(path.suffixes[-2:]) if kind == "file" else ""
        tmp = path.parent / f".{path.name}{_TMP}{os.getpid()}-{secrets.token_hex(4)}{ext}"
        if kind == "dir":
            tmp.mkdir()
        try:
            yield tmp
            if kind == "file" and not tmp.is_file():
                raise RuntimeError(f"nothing was written for {path}")
            _commit(tmp, path, kind, force)
        except BaseException:
            _remove(tmp)
            raise
    finally:
        lock.unlink(missing_ok=True)


def write_text(path: str | Path, text: str, *, suffixes: Sequence[str] = (), force: bool = False,
               what: str = "output") -> Path:
    """Atomically write a small text file (results JSON, tables); with ``force`` it replaces a file
    of the same kind (one of ``suffixes``)."""
    with atomic_output(path, kind="file", suffixes=suffixes, force=force, what=what) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path).expanduser()
