"""Quantized models in memory (:class:`QuantizedModel`) and on disk (artifact folders).

An artifact folder holds the inference weights (``model.pt``: the state dict of an eager INT8
module; ``stages.pt2`` files for PT2E; ``model.onnx`` for the ONNX Runtime recipes) and
``vitsq.json`` (source model and its hash, recipe and version, engine, calibration set hash,
coverage). ``vitsq.load(DIR)`` reads it through the loaders registered in
:data:`vitsq.registry.ARTIFACT_LOADERS` (:func:`vitsq.quantize.eager.load_eager_artifact`,
:func:`vitsq.quantize.pt2e.load_pt2e_artifact`, :func:`vitsq.export.onnx.load_onnx_artifact`).
Loading is strict: hashes are verified, the state dict must match exactly, and the engine used
at calibration must be available and is the only one used for inference.

This module knows no recipe implementation: each one hands :class:`QuantizedModel` the function
that writes its files.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger(__name__)

EAGER_KIND = "torch-eager"
PT2E_KIND = "torch-pt2e"
ONNX_KIND = "onnx"
EAGER_FILE = "model.pt"


@dataclass
class QuantizedModel:
    """What :func:`vitsq.quantize` returns, whatever the recipe: a quantized model you can
    synthesize with and save.

    It is a :class:`~vitsq.synth.Synthesizer` by delegation (``q.synthesize(...)``,
    ``q.describe()``, ``q.backend``, ... are those of ``q.synth``, which runs the quantized model:
    on torch for eager/pt2e, on ONNX Runtime for ort-static/ort-dynamic). :meth:`save` writes the
    artifact folder that ``vitsq.load`` reads.

    ``write_files(folder) -> [file names]`` writes the weights of torch recipes (the manifest is
    written here). ``build_dir`` is the finished artifact folder of the ONNX Runtime recipes,
    built in a temporary folder this object owns (removed with it); :meth:`save` copies it.
    """

    synth: Any
    recipe: Any
    calibration: Any
    coverage: Any = None
    source: dict[str, Any] = field(default_factory=dict)
    kind: str = EAGER_KIND
    extra: dict[str, Any] = field(default_factory=dict)
    write_files: Callable[[Path], list[str]] | None = None
    build_dir: Path | None = None
    #: keeps ``build_dir`` alive as long as this object (a TemporaryDirectory, or None)
    _scratch: Any = field(default=None, repr=False)

    def __getattr__(self, name: str) -> Any:
        # only reached for names the dataclass lacks: the Synthesizer interface of ``synth``
        if name.startswith("_") or name == "synth":
            raise AttributeError(name)
        return getattr(self.synth, name)

    @property
    def quantization(self) -> dict[str, Any]:
        """The quantization record (recipe, calibration, coverage, extras) of the manifest."""
        if self.build_dir is not None:
            return dict(self.synth.quantization or {}, **self.extra)
        return quant_info(self.recipe, self.calibration, self.coverage, **self.extra)

    def save(self, directory: str | Path, *, force: bool = False) -> Path:
        """Write the artifact folder (weights + ``vitsq.json``); returns the folder.

        The folder is written whole to a temporary sibling and moved into place
        (:mod:`vitsq.outputs`); an existing ``directory`` is refused unless ``force`` and it is a
        vitsq artifact, which is then replaced whole (never merged with: no weights of one kind
        beside a manifest of another).
        """
        from vitsq.manifest import write_manifest
        from vitsq.outputs import atomic_output

        directory = Path(directory).expanduser()
        with atomic_output(directory, kind="dir", force=force, what="artifact folder") as tmp:
            if self.build_dir is not None:
                if self.extra:
                    raise ValueError("extra quantization facts cannot be added to a built ONNX artifact")
                files = [p.name for p in sorted(self.build_dir.iterdir()) if p.is_file()]
                for name in files:
                    shutil.copyfile(self.build_dir / name, tmp / name)
            else:
                if self.write_files is None:
                    raise ValueError(f"{self.kind} QuantizedModel has no writer for its files")
                files = self.write_files(tmp)
                write_manifest(tmp, self.kind, config=self.synth.config, files=files, source=self.source,
                               quantization=self.quantization,
                               coverage=self.coverage.to_dict() if self.coverage is not None else None)
        if self.build_dir is None:
            self.synth.artifact_paths = [directory / f for f in files]
        log.info("wrote %s (%s, %.2f MB)", directory, self.kind, self.synth.size_bytes() / 1e6)
        return directory

    def __repr__(self) -> str:
        return f"<QuantizedModel {self.synth.name} recipe={self.recipe.name} backend={self.synth.backend}>"


def quant_info(recipe: Any, calibration: Any, coverage: Any, **extra: Any) -> dict[str, Any]:
    """The ``quantization`` record of a manifest: recipe fields, calibration set, coverage."""
    info = {**recipe.to_dict(), "calibration": calibration.to_dict() if calibration is not None else None}
    if getattr(recipe, "engine", None):
        info["engine"] = recipe.engine
    if coverage is not None:
        info["coverage"] = coverage.summary()
        info["quantized_layers"] = [l.name for l in coverage.layers if l.quantized]
    info.update(extra)
    return info


def check_torch_backend(directory: Path, kind: str, backend: str) -> None:
    """Torch-recipe artifacts run on the torch backend only."""
    from vitsq.errors import UnsupportedError

    if backend != "torch":
        raise UnsupportedError(f"{directory} is a {kind} artifact: it runs on the torch backend, not {backend!r}")
