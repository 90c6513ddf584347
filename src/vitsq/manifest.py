"""Self-describing artifacts: the ``vitsq.json`` manifest written beside every saved model.

A manifest names the artifact ``kind`` (which loader reads it), the model config, symbol map,
sample rate, the source model and its hash, the quantization recipe, and the SHA-256 of each
file. The manifest covers itself too: ``manifest_sha256`` is the SHA-256 of its canonical JSON
(every other field), so an edited sample rate, symbol map or file name is refused at load time
like an edited weight file. This is an integrity check against accidental or careless edits,
not a signature: whoever can rewrite the folder can recompute the hashes.

Every file a manifest names is a plain relative path inside the artifact folder (no absolute
path, no ``..``, no symbolic link leading out of it) listed under ``files`` with its hash; a
field naming a file (``model_file``, ``file``, ``*_file``) must name one of those.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import time
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from vitsq.errors import ModelLoadError

MANIFEST = "vitsq.json"
FORMAT_VERSION = 1
HASH_FIELD = "manifest_sha256"
_RECREATE = "re-create the artifact with vitsq (vitsq quantize / vitsq export)"


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def manifest_digest(manifest: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of ``manifest`` without its ``manifest_sha256`` field.

    Canonical: sorted keys, no whitespace, UTF-8 (``ensure_ascii=False``), so the digest does not
    depend on how the file is indented. Raises ``TypeError`` for a value JSON cannot hold.
    """
    body = {k: v for k, v in manifest.items() if k != HASH_FIELD}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def source_info(synth: Any) -> dict[str, Any]:
    """Identify the model an artifact was made from (name, source file and its hash, label)."""
    info: dict[str, Any] = {"name": synth.name, "weights": getattr(synth, "label", "trained")}
    src = synth.describe().get("source")
    if src and Path(src).is_file():
        info["source"] = str(src)
        info["sha256"] = file_sha256(src)
    return info


def _unsafe_reason(name: Any) -> str | None:
    """Why ``name`` is not a plain relative path inside a folder, or None when it is."""
    if not isinstance(name, str) or not name:
        return "is not a file name"
    if "\\" in name or "\0" in name or PureWindowsPath(name).drive:
        return "is not a plain relative path"
    if PurePosixPath(name).is_absolute() or PureWindowsPath(name).is_absolute():
        return "is an absolute path"
    parts = name.split("/")
    if any(p in ("", ".", "..") for p in parts):
        return "leaves or re-enters the artifact folder ('..', '.', or an empty path part)"
    if name == MANIFEST:
        return "is the manifest itself"
    return None


def _file_fields(node: Any, where: str = "") -> list[tuple[str, str]]:
    """(``key.path``, value) of every field naming a file: ``file``, ``*_file`` (any depth)."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            path = f"{where}.{key}" if where else str(key)
            if isinstance(key, str) and (key == "file" or key.endswith("_file")):
                found.append((path, value))
            else:
                found.extend(_file_fields(value, path))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found.extend(_file_fields(value, f"{where}[{i}]"))
    return found


def _check_names(files: list[str], fields: list[tuple[str, Any]]) -> None:
    """Writer-side counterpart of the load checks (a bug in a writer, hence ValueError)."""
    for name in files:
        reason = _unsafe_reason(name)
        if reason:
            raise ValueError(f"artifact file {name!r} {reason}: manifest files are relative names inside the folder")
    for path, value in fields:
        if value not in files:
            raise ValueError(f"manifest field {path}={value!r} names a file that is not in files {files}")


def write_manifest(directory: str | Path, kind: str, *, config: Any, files: list[str],
                   source: dict[str, Any] | None = None, quantization: dict[str, Any] | None = None,
                   **extra: Any) -> Path:
    """Write ``vitsq.json`` describing the artifact files (relative names) in ``directory``.

    Each name in ``files`` is a relative path inside ``directory`` and gets its SHA-256; any field
    naming a file (``model_file=``, a nested ``file``/``*_file``) must be one of ``files``. The
    manifest carries ``manifest_sha256`` over its own content. Written atomically (temporary
    file in ``directory``, then ``os.replace``). Returns the manifest path.
    """
    directory = Path(directory)
    files = list(files)
    manifest = {
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": config.to_dict(),
        "sample_rate": config.sample_rate,
        "files": {},
        "source": source or {},
        "quantization": quantization,
        **extra,
    }
    # what a reader will parse (tuples become lists, odd values strings): hash exactly that
    manifest = json.loads(json.dumps(manifest, ensure_ascii=False, default=str))
    _check_names(files, _file_fields({k: v for k, v in manifest.items() if k != "files"}))
    manifest["files"] = {name: {"sha256": file_sha256(directory / name), "bytes": (directory / name).stat().st_size}
                         for name in files}
    manifest[HASH_FIELD] = manifest_digest(manifest)
    path = directory / MANIFEST
    # os.open with 0o666 (not mkstemp's 0o600): the manifest honours the umask like every other file
    tmp = directory / f".{MANIFEST}.{secrets.token_hex(8)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(manifest, indent=2, ensure_ascii=False))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _modified(directory: Path, what: str) -> ModelLoadError:
    return ModelLoadError(f"{directory}: {MANIFEST} was modified after vitsq wrote it ({what}); "
                          f"it cannot be trusted: {_RECREATE}")


def _check_digest(directory: Path, manifest: dict[str, Any]) -> None:
    stored = manifest.get(HASH_FIELD)
    if not isinstance(stored, str):
        raise ModelLoadError(f"{directory}: {MANIFEST} has no {HASH_FIELD} (written by an older vitsq, or "
                             f"edited): {_RECREATE}")
    try:
        actual = manifest_digest(manifest)
    except (TypeError, ValueError) as exc:
        raise _modified(directory, f"content is not plain JSON: {exc}") from exc
    if actual != stored:
        raise _modified(directory, f"its content does not match its {HASH_FIELD}")


def _listed_file(directory: Path, root: Path, name: Any) -> Path:
    """The resolved path of a listed file, refused unless it is a regular file inside ``root``."""
    reason = _unsafe_reason(name)
    if reason:
        raise _modified(directory, f"listed file {name!r} {reason}")
    path = directory / name
    try:
        resolved = path.resolve(strict=True)
    except (OSError, RuntimeError):
        raise ModelLoadError(f"{directory}: {name} is listed in {MANIFEST} but missing: {_RECREATE}") from None
    if not resolved.is_relative_to(root):
        raise _modified(directory, f"listed file {name!r} is a link to {resolved}, outside the artifact folder")
    if not resolved.is_file():
        raise ModelLoadError(f"{directory}: {name} is listed in {MANIFEST} but is not a regular file: {_RECREATE}")
    return path


def verify_manifest(directory: str | Path, manifest: dict[str, Any]) -> None:
    """Check the manifest and the artifact files before anything is loaded from them.

    Refused with :class:`~vitsq.errors.ModelLoadError` naming the artifact: an unsupported
    ``format_version``; a manifest whose content does not match its ``manifest_sha256``; a listed
    file that is not a plain relative path inside the folder (absolute, ``..``, a link out of it),
    missing, or whose SHA-256 differs; a field naming a file (``model_file``, ``file``,
    ``*_file``) that is not listed under ``files``.
    """
    directory = Path(directory)
    if not isinstance(manifest, dict):
        raise ModelLoadError(f"{directory}/{MANIFEST} is not a JSON object: {_RECREATE}")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ModelLoadError(f"{directory}/{MANIFEST}: format_version {manifest.get('format_version')!r} "
                             f"is not supported (this vitsq reads version {FORMAT_VERSION}): {_RECREATE}")
    _check_digest(directory, manifest)
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise ModelLoadError(f"{directory}/{MANIFEST} lists no files: {_RECREATE}")
    for path, value in _file_fields({k: v for k, v in manifest.items() if k != "files"}):
        if not isinstance(value, str) or value not in files:
            raise _modified(directory, f"{path}={value!r} names a file not listed under files "
                                       f"({', '.join(map(str, files))})")
    try:
        root = directory.resolve(strict=True)
    except (OSError, RuntimeError) as exc:
        raise ModelLoadError(f"{directory}: artifact folder cannot be read: {exc}") from exc
    for name, meta in files.items():
        path = _listed_file(directory, root, name)
        if not isinstance(meta, dict) or file_sha256(path) != meta.get("sha256"):
            raise ModelLoadError(f"{directory}: {name} does not match the hash in {MANIFEST} "
                                 f"(modified or tampered artifact): {_RECREATE}")


def manifest_config(manifest: dict[str, Any]):
    """The :class:`~vitsq.models.config.VitsConfig` a manifest records; ModelLoadError if invalid."""
    from vitsq.models.config import VitsConfig

    try:
        return VitsConfig.from_dict(manifest["config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelLoadError(f"manifest config is invalid: {exc}") from exc


def read_manifest(directory: str | Path) -> dict[str, Any]:
    """The artifact's ``vitsq.json``, verified (:func:`verify_manifest`); it must hold a ``kind``."""
    directory = Path(directory)
    path = directory / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(manifest, dict) or "kind" not in manifest:
        raise ModelLoadError(f"{path} has no 'kind': not a vitsq artifact manifest")
    # verified before its kind picks a backend or loader: an edited kind is refused here
    verify_manifest(directory, manifest)
    return manifest
