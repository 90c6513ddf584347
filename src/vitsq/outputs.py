"""Writing outputs without ever losing a user's data.

Every file or folder vitsq produces goes through :func:`atomic_output`:

1. :func:`check_output` validates the path *before* any slow work: the right extension, a parent
   that is (or can be made) a writable folder, and, when the path exists, ``force`` plus proof that
   vitsq wrote what is there (a folder with a ``vitsq.json`` manifest, or a file of the expected
   kind). An arbitrary folder is never replaced.
2. A lock file beside the target (``.NAME.vitsq-lock``) held with ``flock`` makes concurrent
   writers to one path exclusive: the second gets :class:`~vitsq.errors.OutputError` at once. The
   kernel drops the lock of a writer that dies, so a killed writer never blocks the path.
3. The content is written to a temporary sibling (``.NAME.vitsq-tmp-PID-XXXX``) and moved into
   place with ``os.replace``/``os.rename`` when complete. Interrupted at any point (Ctrl-C, SIGTERM
   through the CLI's handler, a crash), the old output is still there, untouched; the next writer
   of the path clears what a killed one left.

Only the temporary sibling, the lock, parent folders created for the output (when empty) and a
replaced vitsq artifact are ever deleted.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import secrets
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Literal, Sequence

from vitsq.errors import OutputError

try:  # POSIX; elsewhere the lock is a plain O_EXCL file (a killed writer's lock is removed by hand)
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

Kind = Literal["file", "dir"]
MANIFEST = "vitsq.json"  # same name as vitsq.manifest.MANIFEST (kept import-free here)
_TMP = ".vitsq-tmp-"
_LOCK = ".vitsq-lock"
#: extensions that name a file, refused as folder names
_FILE_SUFFIXES = (".onnx", ".wav", ".pte", ".json", ".pt", ".pth", ".pt2", ".mp3", ".flac", ".ogg", ".md",
                  ".csv", ".png", ".txt")


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
    probe = folder / f"{_TMP}probe-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except OSError as exc:
        raise OutputError(f"cannot write {target}: {folder} is not writable ({exc.strerror or exc})") from exc
    os.close(fd)
    probe.unlink(missing_ok=True)


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
    ends = " or ".join(suffixes)
    if kind == "file" and suffixes and not _suffix_ok(path, suffixes):
        raise OutputError(f"{what} {path} must end in {ends}")
    if kind == "dir" and path.suffix.lower() in _FILE_SUFFIXES:
        raise OutputError(f"{what} {path} must be a folder, not a {path.suffix} file name")
    if path.exists() or path.is_symlink():
        if path.is_symlink():
            raise OutputError(f"{what} {path} is a symbolic link: vitsq replaces only what it wrote; "
                              "choose another path")
        if kind == "file" and not path.is_file():
            raise OutputError(f"{what} {path} is a folder: give a file path"
                              + (f" ending in {ends}" if ends else ""))
        if kind == "dir" and not path.is_dir():
            raise OutputError(f"{what} {path} is a file, not a folder: choose another path")
        if not force:
            raise OutputError(f"{what} {path} already exists: choose another path or pass --force to replace it")
        if kind == "dir" and not is_vitsq_artifact(path):
            raise OutputError(f"{what} {path} is a folder vitsq did not write (no {MANIFEST}): --force only "
                              "replaces vitsq artifacts; choose another path")
    _check_writable_folder(_nearest_existing(path.parent), path)
    return path


# ------------------------------------------------------------------------------------ writer lock
def _lock_path(path: Path) -> Path:
    return path.parent / f".{path.name}{_LOCK}"


def _tmp_pattern(path: Path) -> re.Pattern:
    return re.compile(rf"\.{re.escape(path.name)}{re.escape(_TMP)}(\d+)-(old-)?[0-9a-f]{{8}}")


def _clear_leftovers(path: Path) -> None:
    """Under the lock: remove temporary siblings a killed writer left; if it died while swapping
    folders (old artifact moved aside, new one not yet in place), put the old one back."""
    pattern = _tmp_pattern(path)
    for p in path.parent.iterdir():
        m = pattern.match(p.name)
        if not m or int(m.group(1)) == os.getpid():
            continue
        if m.group(2) and not (path.exists() or path.is_symlink()):
            log.warning("restoring %s from an interrupted replacement (%s)", path, p.name)
            os.rename(p, path)
            continue
        log.info("removing %s, left by a writer that was killed", p)
        _remove(p)


def _busy(path: Path, lock: Path) -> OutputError:
    try:
        pid = int(lock.read_text().strip() or 0)
    except (OSError, ValueError):
        pid = 0
    if pid == os.getpid():
        return OutputError(f"{path} is already being written by this process")
    who = f"another vitsq process (pid {pid})" if pid else "another vitsq process"
    return OutputError(f"{who} is writing {path}: wait for it or choose another path")


def _acquire_lock(path: Path) -> tuple[Path, int]:
    """Take the writer lock of ``path``: ``(lock file, open descriptor)``; busy -> OutputError."""
    lock = _lock_path(path)
    if fcntl is None:  # pragma: no cover
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
        except FileExistsError:
            raise _busy(path, lock) from None
        os.write(fd, str(os.getpid()).encode())
        return lock, fd
    for _ in range(10):
        fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o644)
        held = False
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise _busy(path, lock) from None
                raise OutputError(f"cannot lock {lock}: {exc.strerror or exc}") from exc
            held = True
            # the holder before us may have unlinked the file between our open and our flock
            if _same_file(lock, fd):
                os.ftruncate(fd, 0)
                os.write(fd, str(os.getpid()).encode())
                return lock, fd
        except BaseException:
            # busy, or interrupted (SIGTERM unwinds as KeyboardInterrupt) before the caller could
            # release it: a lock we hold is removed, one we do not is left to its holder
            if held and _same_file(lock, fd):
                lock.unlink(missing_ok=True)
            os.close(fd)
            raise
        os.close(fd)
    raise OutputError(f"cannot take the write lock {lock}: too much contention; try again")


def _same_file(lock: Path, fd: int) -> bool:
    try:
        return os.stat(lock).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def _release_lock(lock: Path, fd: int) -> None:
    # unlink while still holding it: a waiter that opened this inode re-checks it and retries
    lock.unlink(missing_ok=True)
    os.close(fd)


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        p.unlink(missing_ok=True)


# ------------------------------------------------------------------------------------ commit
def _commit(tmp: Path, path: Path, kind: Kind, force: bool) -> None:
    exists = path.exists() or path.is_symlink()
    if exists and not force:
        raise OutputError(f"output {path} appeared while vitsq was writing it: left untouched; "
                          "choose another path or pass --force")
    if kind == "file":
        if exists:
            if not path.is_file() or path.is_symlink():
                raise OutputError(f"output {path} was replaced by something else while vitsq was writing it: "
                                  "left untouched")
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
        os.rename(tmp, path)  # fails (ENOTEMPTY/EEXIST) rather than clobber a folder made meanwhile
        return
    if path.is_symlink() or not is_vitsq_artifact(path):
        raise OutputError(f"output {path} was replaced by something vitsq did not write while it was "
                          "writing: left untouched")
    # replace a vitsq artifact folder: move it aside, move the new one in, then drop the old one
    old = path.parent / f".{path.name}{_TMP}{os.getpid()}-old-{secrets.token_hex(4)}"
    os.rename(path, old)
    try:
        os.rename(tmp, path)
    except BaseException:
        os.rename(old, path)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _missing_parents(path: Path) -> list[Path]:
    """Ancestors of ``path`` that do not exist yet, deepest first."""
    out = []
    p = path.parent
    while not (p.exists() or p.is_symlink()) and p.parent != p:
        out.append(p)
        p = p.parent
    return out


@contextmanager
def atomic_output(path: str | Path, *, kind: Kind = "file", suffixes: Sequence[str] = (),
                  force: bool = False, what: str = "output") -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write; move it into place when the block succeeds.

    For ``kind="dir"`` the sibling is an empty folder; for ``"file"`` it is a path (not created)
    with the same extension as ``path``, so writers that pick a format by extension still work.
    On any exception (KeyboardInterrupt included) the sibling is removed and the old ``path`` (if
    any) is left untouched. A second writer of the same path gets :class:`OutputError` at once.
    """
    path = check_output(path, kind=kind, suffixes=suffixes, force=force, what=what)
    created = _missing_parents(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the folder {path.parent} for {what} {path}: "
                          f"{exc.strerror or exc}") from exc
    done = False
    try:
        lock, fd = _acquire_lock(path)
        try:
            _clear_leftovers(path)
            # re-check under the lock: a writer that finished just before us must not be clobbered
            check_output(path, kind=kind, suffixes=suffixes, force=force, what=what)
            ext = "".join(path.suffixes[-2:]) if kind == "file" else ""
            tmp = path.parent / f".{path.name}{_TMP}{os.getpid()}-{secrets.token_hex(4)}{ext}"
            try:
                # made inside the try: an interrupt (SIGTERM -> KeyboardInterrupt) arriving right
                # after the folder exists must still remove it
                if kind == "dir":
                    tmp.mkdir()
                yield tmp
                if kind == "file" and not tmp.is_file():
                    raise RuntimeError(f"nothing was written for {path}")
                _commit(tmp, path, kind, force)
                done = True
            finally:
                if not done:
                    _remove(tmp)
        finally:
            _release_lock(lock, fd)
    finally:
        if not done:
            for p in created:  # deepest first; only folders made for this output, and only if empty
                try:
                    p.rmdir()
                except OSError:
                    break


def write_text(path: str | Path, text: str, *, suffixes: Sequence[str] = (), force: bool = False,
               what: str = "output") -> Path:
    """Atomically write a small text file (results JSON, tables); with ``force`` it replaces a file
    of the same kind (one of ``suffixes``)."""
    with atomic_output(path, kind="file", suffixes=suffixes, force=force, what=what) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path).expanduser()
