"""Self-describing artifacts: the ``vitsq.json`` manifest written beside every saved model.

A manifest names the artifact ``kind`` (which loader reads it), the model config, symbol map,
sample rate, the source model and its hash, the quantization recipe, and the SHA-256 of each
file so that a tampered or mismatched artifact is refused at load time.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from vitsq.errors import ModelLoadError

MANIFEST = "vitsq.json"
FORMAT_VERSION = 1


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def source_info(synth: Any) -> dict[str, Any]:
    """Identify the model an artifact was made from (name, source file and its hash, label)."""
    info: dict[str, Any] = {"name": synth.name, "weights": getattr(synth, "label", "trained")}
    src = synth.describe().get("source")
    if src and Path(src).is_file():
        info["source"] = str(src)
        info["sha256"] = file_sha256(src)
    return info


def write_manifest(directory: str | Path, kind: str, *, config: Any, files: list[str],
                   source: dict[str, Any] | None = None, quantization: dict[str, Any] | None = None,
                   **extra: Any) -> Path:
    """Write ``vitsq.json`` describing the artifact files (relative names) in ``directory``."""
    directory = Path(directory)
    manifest = {
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": config.to_dict(),
        "sample_rate": config.sample_rate,
        "files": {name: {"sha256": file_sha256(directory / name), "bytes": (directory / name).stat().st_size}
                  for name in files},
        "source": source or {},
        "quantization": quantization,
        **extra,
    }
    path = directory / MANIFEST
    path.write_text(json.dumps(manifest, indent=2, ensure_ascii=False, default=str), encoding="utf-8")
    return path


def verify_manifest(directory: str | Path, manifest: dict[str, Any]) -> None:
    """Check format version and every listed file's hash; raise ModelLoadError naming the problem."""
    directory = Path(directory)
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ModelLoadError(f"{directory}/{MANIFEST}: format_version {manifest.get('format_version')!r} "
                             f"is not supported (this vitsq reads version {FORMAT_VERSION})")
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise ModelLoadError(f"{directory}/{MANIFEST} lists no files")
    for name, meta in files.items():
        path = directory / name
        if not path.is_file():
            raise ModelLoadError(f"{directory}: {name} is listed in {MANIFEST} but missing")
        if file_sha256(path) != meta.get("sha256"):
            raise ModelLoadError(f"{directory}: {name} does not match the hash in {MANIFEST} "
                                 "(modified or tampered artifact): re-create it with vitsq")


def manifest_config(manifest: dict[str, Any]):
    from vitsq.models.config import VitsConfig

    try:
        return VitsConfig.from_dict(manifest["config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelLoadError(f"manifest config is invalid: {exc}") from exc
