"""``vitsq.export(model_or_artifact, format, out, ...)``: what ``vitsq export`` runs.

Formats: ``onnx`` (a bare graph with its config in the metadata), ``piper`` (``voice.onnx`` +
``voice.onnx.json`` for the Piper runtime), ``vosk-dir`` (a folder the ``vosk-tts`` runtime loads),
``executorch`` (``.pte`` programs), ``sherpa`` (a Piper voice folder for sherpa-onnx,
:mod:`vitsq.export.sherpa`). A model is exported from its FP32 torch weights, optionally
quantized on the way (``recipe``: a name = the measured preset, :func:`vitsq.quantize.recipes.best_for`);
an ONNX artifact (``vitsq quantize --recipe ort-static|ort-dynamic``) is exported by reusing its graph.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from vitsq.errors import InputError, UnsupportedError

log = logging.getLogger(__name__)

FORMATS = ("onnx", "vosk-dir", "piper", "executorch", "sherpa")
ONNX_RECIPES = ("fp32", "ort-static", "ort-dynamic")
EXECUTORCH_RECIPES = ("fp32", "pt2e")
#: Formats ``--streaming`` applies to (ONNX: an artifact folder, since one file cannot carry the
#: streaming graphs beside the whole-sentence one).
STREAMING_FORMATS = ("onnx", "executorch")
ONNX_KINDS = ("onnx", "vosk-dir")


def check_export_args(fmt: str, out: str | Path, *, recipe: Any = None, force: bool = False,
                      calib: int | None = None, calibrate_method: str | None = None,
                      espeak_data: bool = True, streaming: bool = False) -> Path:
    """Everything about an export that can be refused without the model: format, recipe and the
    options it takes, and the output path (:mod:`vitsq.outputs`). Returns the output path."""
    from vitsq.export.onnx import check_export_output
    from vitsq.outputs import check_output

    if fmt not in FORMATS:
        raise InputError(f"unknown export format {fmt!r}: valid formats are {', '.join(FORMATS)}")
    if streaming and fmt not in STREAMING_FORMATS:
        raise InputError(f"--streaming applies to --format {' and '.join(STREAMING_FORMATS)} (onnx: a folder with "
                         "the streaming graphs beside model.onnx; executorch: the streaming methods in decoder.pte), "
                         f"not to --format {fmt}")
    if fmt == "sherpa":
        from vitsq.export.sherpa import check_sherpa_args

        return check_sherpa_args(out, recipe=recipe, force=force, espeak_data=espeak_data, calib=calib,
                                 calibrate_method=calibrate_method)
    if not espeak_data:
        raise InputError("--no-espeak-data applies to --format sherpa only (the other formats copy no espeak data)")
    name = recipe if recipe is None or isinstance(recipe, str) else getattr(recipe, "name", recipe)
    if fmt == "executorch":
        if calibrate_method is not None:
            raise InputError("--calibrate-method applies to the ort-static recipe, not to ExecuTorch (pt2e uses "
                             "min/max observers)")
        if isinstance(name, str) and name.startswith("pt2e:"):
            from vitsq.quantize.recipes import recipe_class

            recipe_class(name)  # pt2e:faithful / pt2e:fast; any other variant is refused, naming these
            name = "pt2e"
        if name not in (None, *EXECUTORCH_RECIPES):
            raise UnsupportedError(f"ExecuTorch export recipe {name!r} is not supported: valid are fp32 (float) "
                                   "and pt2e (INT8; pt2e:faithful, the default for VITS voices, or pt2e:fast)")
        if calib is not None and (name or "fp32") == "fp32":
            raise InputError("--calib applies to --recipe pt2e: float (fp32) programs are not calibrated")
        return check_output(out, kind="dir", force=force, what="ExecuTorch output folder")
    name = name or "fp32"
    # a preset variant (``ort-static:fast``) takes the options of its recipe
    name = name.split(":", 1)[0] if isinstance(name, str) else name
    if name not in ONNX_RECIPES:
        raise InputError(f"recipe {name!r} does not apply to --format {fmt}: valid are {', '.join(ONNX_RECIPES)}")
    if name != "ort-static":
        for flag, value in (("--calibrate-method", calibrate_method), ("--calib", calib)):
            if value is not None:
                raise InputError(f"{flag} applies to --recipe ort-static only (it calibrates activation ranges); "
                                 f"the {name} export takes no calibration")
    if streaming:
        if name == "ort-dynamic":
            raise UnsupportedError("--streaming needs --recipe fp32 or ort-static: ort-dynamic ranges activations "
                                   "per call, so a chunk would not see the ranges the whole sentence sees")
        return check_output(out, kind="dir", force=force, what="ONNX streaming artifact folder")
    return check_export_output(fmt, out, force)


def _artifact_kind(spec: Any) -> tuple[Path, str] | None:
    """(folder, kind) when ``spec`` names a vitsq artifact folder, else None."""
    if not isinstance(spec, (str, Path)):
        return None
    path = Path(spec).expanduser()
    if not (path / "vitsq.json").is_file():
        return None
    from vitsq.manifest import read_manifest

    return path, read_manifest(path)["kind"]


def export(model_or_artifact: Any, format: str, out: str | Path, recipe: Any = None, force: bool = False, *,
           config_path: str | Path | None = None, calib: int | None = None,
           calibrate_method: str | None = None, espeak_data: bool = True, streaming: bool = False) -> Path:
    """Export a model or an ONNX artifact as ``format`` into ``out``; returns the path written.

    ``model_or_artifact``: a model spec (name or path, loaded on the torch backend; ``config_path``
    as for :func:`vitsq.load`), a torch-backend synthesizer, an ONNX artifact folder, or a
    :class:`~vitsq.quantize.artifact.QuantizedModel` of an ONNX Runtime recipe. ``recipe``: ONNX
    formats ``fp32`` (default), ``ort-static``, ``ort-dynamic``; ExecuTorch ``fp32`` or ``pt2e``
    (names mean the measured presets; a recipe object is used as given). ``calib``: calibration
    sentences (ort-static, pt2e); ``calibrate_method``: ort-static activation ranges. The output is
    written atomically; an existing one is replaced only with ``force`` (and only a vitsq output).
    An artifact exported to a format it cannot become is an UnsupportedError. ``espeak_data``
    (``sherpa`` only): False leaves the espeak-ng data folder out of the sherpa-onnx folder.
    ``streaming``: ``executorch``: ``decoder.pte`` also gets the chunk-by-chunk methods
    (:mod:`vitsq.export.executorch_stream`); ``onnx``: ``out`` is a folder, ``model.onnx`` with
    the streaming graphs beside it (:mod:`vitsq.export.onnx_stream`), FP32 or ort-static.
    """
    out = check_export_args(format, out, recipe=recipe, force=force, calib=calib,
                            calibrate_method=calibrate_method, espeak_data=espeak_data, streaming=streaming)
    build_dir = getattr(model_or_artifact, "build_dir", None)
    art = _artifact_kind(model_or_artifact) if build_dir is None else (Path(build_dir), "onnx")
    if art is not None:
        if streaming:
            raise UnsupportedError(f"{art[0]} is an existing artifact: --streaming adds graphs made from the torch "
                                   "model, so export the source model with --streaming (and its --recipe)")
        return _export_artifact(*art, format, out, recipe, force, config_path, espeak_data=espeak_data)
    synth = model_or_artifact
    if isinstance(synth, (str, Path)):
        from vitsq.registry import load

        synth = load(synth, backend="torch", config_path=config_path)
    elif config_path is not None:
        raise InputError("config_path applies to a model given by path; this model is already loaded")
    if format == "sherpa":
        from vitsq.export.sherpa import export_sherpa

        return export_sherpa(synth, out, recipe=recipe, force=force, espeak_data=espeak_data, calib=calib,
                             calibrate_method=calibrate_method)
    if format == "executorch":
        from vitsq.export.executorch import export_executorch

        kwargs: dict[str, Any] = {"force": force, "recipe": recipe, "streaming": streaming}
        if calib is not None:
            kwargs["calibration_sentences"] = calib
        return export_executorch(synth, out, **kwargs)
    if streaming:  # format onnx: a folder that vitsq.load streams chunk by chunk
        return _export_onnx_streaming(synth, out, recipe, force, calib, calibrate_method)
    if (recipe or "fp32") == "fp32":
        from vitsq.export.onnx import export as export_fp32

        return export_fp32(synth, format, out, force=force)
    from vitsq.quantize.ort import export_quantized

    return export_quantized(synth, format, out, recipe, force=force, calib=calib, calibrate_method=calibrate_method)


def _export_onnx_streaming(synth: Any, out: Path, recipe: Any, force: bool, calib: int | None,
                           calibrate_method: str | None) -> Path:
    """``--format onnx --streaming``: the ONNX artifact folder with the streaming graphs (FP32, or
    ``vitsq quantize --recipe ort-static --streaming``'s folder for an ort-static recipe)."""
    if (recipe or "fp32") == "fp32":
        from vitsq.export.onnx import export_onnx_dir

        return export_onnx_dir(synth, out, force=force, streaming=True)
    from vitsq.quantize.workflow import QuantizeOptions, quantize_to_dir

    if not isinstance(recipe, str):
        raise InputError("--format onnx --streaming takes a recipe name (ort-static or ort-static:fast); for a "
                         "recipe object use vitsq.quantize(model, recipe, streaming=True)")
    opts = QuantizeOptions(recipe=recipe, calib=calib, calibrate_method=calibrate_method, streaming=True)
    return Path(quantize_to_dir(synth, out, opts, force=force).out_dir)


def _export_artifact(directory: Path, kind: str, fmt: str, out: Path, recipe: Any, force: bool,
                     config_path: Any, espeak_data: bool = True) -> Path:
    if config_path is not None:
        raise InputError(f"{directory} is a vitsq artifact and carries its own config: drop --config")
    if kind not in ONNX_KINDS or fmt == "executorch":
        raise UnsupportedError(f"{directory} is a {kind} artifact, which cannot be exported as --format {fmt}: "
                               f"ONNX artifacts (kinds {', '.join(ONNX_KINDS)}) become onnx, piper, vosk-dir or sherpa; "
                               f"for other formats export the source model (e.g. vitsq export MODEL --format {fmt})")
    if recipe not in (None, "fp32"):
        raise UnsupportedError(f"{directory} is already quantized ({kind} artifact): drop --recipe, or export the "
                               f"source model with --recipe {getattr(recipe, 'name', recipe)}")
    if fmt == "sherpa":
        from vitsq.export.sherpa import export_sherpa_artifact

        return export_sherpa_artifact(directory, out, force=force, espeak_data=espeak_data)
    from vitsq.export.onnx import export_onnx_artifact

    return export_onnx_artifact(directory, fmt, out, force=force)
