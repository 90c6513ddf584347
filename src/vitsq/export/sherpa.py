"""``vitsq export --format sherpa``: a Piper voice as a sherpa-onnx model folder.

The folder is laid out like sherpa-onnx's published Piper models (``vits-piper-*``)::

    en_US-joe-medium.onnx        the graph, with the metadata sherpa-onnx reads (comment=piper,
                                 n_speakers, ...) beside vitsq's own keys
    en_US-joe-medium.onnx.json   the Piper voice config (the same file loads in piper-tts)
    tokens.txt                   one "symbol id" line per phoneme
    espeak-ng-data/              espeak-ng's data, copied from the installed piper-phonemize
                                 (read by sherpa-onnx < 2.0; left out with espeak_data=False)
    README.md                    what it is, the sherpa-onnx versions it was tested with, how to run it
    vitsq.json                   the manifest (kind ``sherpa``): vitsq loads the folder too

FP32 graphs come from the torch model; INT8 ones from the ONNX Runtime recipes (``ort-static``,
``ort-dynamic``); an ONNX artifact folder (``vitsq quantize --recipe ort-*``) is reused as is.
Only models whose symbols sherpa-onnx can hold are accepted
(:func:`vitsq.export.onnx.sherpa_unfit_reason`): Piper voices, not the Vosk Russian models.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vitsq.errors import InputError, UnsupportedError
from vitsq.export.onnx import read_metadata, set_metadata, sherpa_metadata, sherpa_unfit_reason
from vitsq.outputs import atomic_output, check_output

if TYPE_CHECKING:
    from vitsq.models.config import VitsConfig

log = logging.getLogger(__name__)

KIND = "sherpa"
TOKENS_FILE = "tokens.txt"
DATA_DIR = "espeak-ng-data"
README_FILE = "README.md"
#: sherpa-onnx releases the test suite runs these folders in (tests/test_sherpa.py).
TESTED_SHERPA_ONNX = ("2.0.1",)
RECIPES = ("fp32", "ort-static", "ort-dynamic")


# =========================================================================== checks
def check_sherpa_fits(config: "VitsConfig", what: str = "this model") -> None:
    """UnsupportedError when sherpa-onnx cannot run ``config``'s model, saying why and what to use."""
    reason = sherpa_unfit_reason(config)
    if reason is not None:
        family = "Vosk VITS2" if config.arch == "vits2" else config.arch.upper()
        raise UnsupportedError(
            f"sherpa-onnx cannot run {what} ({family}, {config.phoneme_type} front-end): {reason}. "
            "Export it with --format vosk-dir (the vosk-tts runtime) or --format onnx instead")


def espeak_data_source() -> "Path":
    """The ``espeak-ng-data`` folder of the installed ``piper-phonemize`` wheel (UnsupportedError if absent)."""
    hint = "reinstall piper-phonemize==1.1.0, or pass --no-espeak-data (sherpa-onnx >= 2.0 does not read it)"
    try:
        import piper_phonemize
    except ImportError as exc:
        raise UnsupportedError(f"piper-phonemize is not installed, so there is no espeak-ng-data to copy: {hint}") from exc
    data = Path(piper_phonemize.__file__).resolve().parent / DATA_DIR
    if not (data / "phontab").is_file() or not (data / "voices").is_dir():
        raise UnsupportedError(f"piper-phonemize's espeak-ng data folder {data} is missing or incomplete "
                               f"(no phontab or voices/): {hint}")
    return data


def check_sherpa_args(out: str | Path, *, recipe: Any = None, force: bool = False, espeak_data: bool = True,
                      calib: int | None = None, calibrate_method: str | None = None) -> Path:
    """What can be refused before loading anything: recipe and its options, the data folder to
    copy, the output folder (:mod:`vitsq.outputs`). Returns the output path."""
    name = recipe if recipe is None or isinstance(recipe, str) else getattr(recipe, "name", recipe)
    name = name or "fp32"
    # a preset variant (``ort-static:fast``) takes the options of its recipe
    name = name.split(":", 1)[0] if isinstance(name, str) else name
    if name not in RECIPES:
        raise InputError(f"recipe {name!r} does not apply to --format sherpa: valid are {', '.join(RECIPES)}")
    if name != "ort-static":
        for flag, value in (("--calibrate-method", calibrate_method), ("--calib", calib)):
            if value is not None:
                raise InputError(f"{flag} applies to --recipe ort-static only (it calibrates activation ranges); "
                                 f"the {name} export takes no calibration")
    if espeak_data:
        espeak_data_source()
    return check_output(out, kind="dir", force=force, what="sherpa-onnx output folder")


# =========================================================================== folder content
def tokens_text(config: "VitsConfig") -> str:
    """``tokens.txt``: ``symbol id`` per line, in id order (sherpa-onnx reads a line ``" 3"`` as the space)."""
    lines = sorted((v[0], k) for k, v in config.phoneme_id_map.items() if k != "\n")
    return "".join(f"{sym} {i}\n" for i, sym in lines)


def model_stem(source: Any, fallback: str) -> str:
    """The model file's name without ``.onnx``: the source voice's (``en_US-joe-medium``), else ``fallback``."""
    src = Path(str(source)) if source else None
    stem = src.name.removesuffix(".onnx") if src is not None and src.name.endswith(".onnx") else fallback
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip(".-")
    return stem or "model"


def readme_text(stem: str, config: "VitsConfig", quantization: dict | None, espeak_data: bool,
                source_name: str) -> str:
    """The folder's README: what it is, the sherpa-onnx versions tested, the command lines."""
    recipe = (quantization.get("recipe") or {}).get("recipe", "INT8") if quantization else "fp32"
    voice = config.espeak_voice or config.language
    tested = ", ".join(TESTED_SHERPA_ONNX)
    data_line = (f"- `{DATA_DIR}/`: espeak-ng data from the piper-phonemize wheel (read by sherpa-onnx < 2.0)\n"
                 if espeak_data else f"- no `{DATA_DIR}/` (exported with --no-espeak-data): sherpa-onnx >= 2.0 only\n")
    return f"""# {stem} for sherpa-onnx

Piper voice `{source_name}` ({config.n_speakers} speaker(s), {config.sample_rate} Hz), exported by vitsq
({recipe}). Tested with sherpa-onnx {tested} (`pip install sherpa-onnx=={TESTED_SHERPA_ONNX[-1]}`).

- `{stem}.onnx`: the model; its metadata carries what sherpa-onnx reads (comment=piper, n_speakers, ...)
- `{stem}.onnx.json`: the Piper voice config (the same `.onnx` loads in piper-tts)
- `{TOKENS_FILE}`: phoneme -> id
{data_line}- `vitsq.json`: vitsq's manifest (`vitsq.load(this_folder)`, `vitsq bench this_folder@sherpa`)

## Run it (sherpa-onnx {tested})

sherpa-onnx 2.x takes phonemes from the caller; piper-phonemize (espeak-ng) makes them:

```python
import sherpa_onnx, soundfile
from piper_phonemize import phonemize_espeak

tts = sherpa_onnx.OfflineTts(sherpa_onnx.OfflineTtsConfig(model=sherpa_onnx.OfflineTtsModelConfig(
    vits=sherpa_onnx.OfflineTtsVitsModelConfig(model="{stem}.onnx", tokens="{TOKENS_FILE}"), num_threads=1)))
gen = sherpa_onnx.GenerationConfig()
gen.phoneme_codepoints = [[ord(p) for p in s] for s in phonemize_espeak("Hello world.", "{voice}")]
audio = tts.generate("", gen)
soundfile.write("out.wav", audio.samples, audio.sample_rate)
```

sherpa-onnx before 2.0 phonemizes the text itself with `{DATA_DIR}/` (run in 1.12.40; it builds
the ids without the pad after `^`, as older Piper did, so its audio differs slightly from piper-tts):

```python
tts = sherpa_onnx.OfflineTts(sherpa_onnx.OfflineTtsConfig(model=sherpa_onnx.OfflineTtsModelConfig(
    vits=sherpa_onnx.OfflineTtsVitsModelConfig(model="{stem}.onnx", tokens="{TOKENS_FILE}",
                                               data_dir="{DATA_DIR}"), num_threads=1)))
audio = tts.generate("Hello world.", sid=0, speed=1.0)
```
"""


def ensure_sherpa_metadata(model_file: Path, config: "VitsConfig") -> bool:
    """Add the sherpa-onnx keys to a Piper graph that lacks them (one written before they existed);
    vitsq's keys are kept. Returns whether the file was rewritten."""
    import onnx

    want = sherpa_metadata(config)
    proto = onnx.load(str(model_file))
    have = read_metadata(proto)
    if all(have.get(k) == v for k, v in want.items()):
        return False
    set_metadata(proto, {k: have[k] for k in have if k.startswith("vitsq.")} | want)
    onnx.save(proto, str(model_file))
    return True


def _finish_folder(tmp: Path, stem: str, config: "VitsConfig", *, quantization: dict | None, source: dict,
                   espeak_data: bool) -> None:
    """tokens.txt, espeak-ng-data, README and the manifest around ``tmp/<stem>.onnx`` (+ .json)."""
    from vitsq.manifest import write_manifest

    model_file = f"{stem}.onnx"
    ensure_sherpa_metadata(tmp / model_file, config)
    (tmp / TOKENS_FILE).write_text(tokens_text(config), encoding="utf-8")
    if espeak_data:
        shutil.copytree(espeak_data_source(), tmp / DATA_DIR)
    (tmp / README_FILE).write_text(readme_text(stem, config, quantization, espeak_data,
                                               source.get("name") or stem), encoding="utf-8")
    files = [model_file, f"{model_file}.json", TOKENS_FILE, README_FILE]
    # espeak-ng-data is espeak's own data, not hashed: sherpa-onnx >= 2.0 runs without it
    write_manifest(tmp, KIND, config=config, files=files, source=source, quantization=quantization,
                   flavor="piper", model_file=model_file, tokens_file=TOKENS_FILE,
                   voice_config_file=f"{model_file}.json", espeak_data_dir=DATA_DIR if espeak_data else None,
                   sherpa_onnx_tested=list(TESTED_SHERPA_ONNX))


# =========================================================================== export
def export_sherpa(synth: Any, out: str | Path, *, recipe: Any = None, force: bool = False,
                  espeak_data: bool = True, calib: int | None = None,
                  calibrate_method: str | None = None) -> Path:
    """Write a torch-backend model as a sherpa-onnx folder (see the module docstring).

    ``recipe``: ``fp32`` (default), ``ort-static`` or ``ort-dynamic`` (a name is the measured
    preset); ``calib``/``calibrate_method`` as for ``vitsq export``. ``espeak_data=False`` leaves
    out the espeak-ng data folder. Written atomically; ``force`` replaces only a vitsq folder.
    """
    from vitsq.export.onnx import _torch_model, export_piper_voice
    from vitsq.manifest import source_info

    out = check_sherpa_args(out, recipe=recipe, force=force, espeak_data=espeak_data, calib=calib,
                            calibrate_method=calibrate_method)
    model, synth = _torch_model(synth)
    check_sherpa_fits(model.config, getattr(synth, "name", "this model"))
    stem = model_stem(synth.describe().get("source") if synth is not None else None,
                      getattr(synth, "name", "model"))
    quant = None
    with atomic_output(out, kind="dir", force=force, what="sherpa-onnx output folder") as tmp:
        voice = tmp / f"{stem}.onnx"
        if (getattr(recipe, "name", recipe) or "fp32") == "fp32":
            export_piper_voice(synth if synth is not None else model, voice)
        elif synth is None:
            raise InputError("an INT8 sherpa-onnx export quantizes a loaded model: pass a synthesizer "
                             "(vitsq.load(spec, backend='torch')), not a bare module")
        else:
            from vitsq.quantize.ort import export_quantized

            export_quantized(synth, "piper", voice, recipe, calib=calib, calibrate_method=calibrate_method)
            import onnx

            quant = json.loads(read_metadata(onnx.load(str(voice), load_external_data=False))
                               .get("vitsq.quantization", "null"))
        _finish_folder(tmp, stem, model.config, quantization=quant,
                       source=source_info(synth) if synth is not None else {}, espeak_data=espeak_data)
    log.info("wrote %s", out)
    return out


def export_sherpa_artifact(directory: str | Path, out: str | Path, *, force: bool = False,
                           espeak_data: bool = True, source_synth: Any = None) -> Path:
    """An ONNX artifact folder (kind ``onnx``, Piper flavor; e.g. ``vitsq quantize --recipe
    ort-static``) as a sherpa-onnx folder: its graph reused, the sherpa-onnx keys added if missing."""
    from vitsq.export.onnx import export_onnx_artifact
    from vitsq.manifest import manifest_config, read_manifest

    directory = Path(directory)
    out = check_sherpa_args(out, force=force, espeak_data=espeak_data)
    manifest = read_manifest(directory)
    if manifest["kind"] not in ("onnx", "vosk-dir"):
        raise UnsupportedError(f"{directory} is a {manifest['kind']} artifact; only ONNX artifacts (kind onnx) "
                               "export as --format sherpa: export the source model instead")
    config = manifest_config(manifest)
    check_sherpa_fits(config, str(directory))
    source = manifest.get("source") or {}
    stem = model_stem(source.get("source"), source.get("name") or directory.name)
    with atomic_output(out, kind="dir", force=force, what="sherpa-onnx output folder") as tmp:
        # the Piper pair, with the source voice's JSON when at hand; refuses a vosk-flavor graph
        export_onnx_artifact(directory, "piper", tmp / f"{stem}.onnx", source_synth=source_synth)
        _finish_folder(tmp, stem, config, quantization=manifest.get("quantization"), source=source,
                       espeak_data=espeak_data)
    log.info("wrote %s", out)
    return out

