"""Load a Vosk TTS model folder (``vosk-model-tts-ru-*``) in the ONNX Runtime backend.

A folder holds ``model.onnx`` (inputs ``input``, ``input_lengths``, ``scales``, ``sid``),
``dictionary`` (pronunciations for the Russian front-end) and ``config.json`` (runtime config:
``phoneme_id_map``, ``inference`` defaults, optionally ``audio.sample_rate``, ``num_speakers``).
Folders whose model takes BERT embeddings (a ``bert/`` sub-folder, a ``bert`` graph input, or
``model_type`` multistream) are reported as unsupported: vitsq implements only the
``g2p_noembed`` front-end.

The folder's ``config.json`` does not describe the architecture; the config reported for it is
the Vosk Russian MB-iSTFT-VITS2 one with the folder's symbols, speakers and sample rate.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from vitsq.errors import ModelLoadError, UnsupportedError
from vitsq.models.config import VitsConfig

log = logging.getLogger(__name__)


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise ModelLoadError(f"Vosk model folder {path.parent} has no {path.name}")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"cannot read {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise ModelLoadError(f"{path}: expected a JSON object")
    return raw


def _onnx_facts(onnx_path: Path) -> tuple[set[str], int | None]:
    """Graph input names and, if an ``emb_g`` initializer exists, its number of speakers."""
    import onnx

    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as exc:
        raise ModelLoadError(f"{onnx_path} is not a readable ONNX model (truncated or corrupt?): {exc}") from exc
    inputs = {i.name for i in model.graph.input}
    n_spk = None
    for init in model.graph.initializer:
        if "emb_g" in init.name and len(init.dims) == 2:
            n_spk = int(init.dims[0])
    return inputs, n_spk


def read_vosk_dir_config(folder: str | Path) -> tuple[VitsConfig, dict]:
    """The :class:`VitsConfig` of a Vosk model folder and its raw ``config.json``.

    Raises :class:`UnsupportedError` for BERT folders, :class:`ModelLoadError` for missing or
    malformed files.
    """
    from vitsq.models.vosk_ckpt import preset_config

    folder = Path(folder)
    onnx_path = folder / "model.onnx"
    if not onnx_path.is_file():
        raise ModelLoadError(f"{folder} is not a Vosk model folder: model.onnx is missing")
    raw = _read_json(folder / "config.json")
    model_type = raw.get("model_type")
    if (folder / "bert").exists() or (model_type and str(model_type).startswith("multistream")):
        raise UnsupportedError(
            f"{folder}: this Vosk model needs BERT word embeddings (bert/ folder or model_type "
            f"{model_type!r}), which vitsq does not support; use a model folder without bert/ "
            "(the g2p_noembed path) or the vosk-tts package"
        )
    inputs, n_spk_onnx = _onnx_facts(onnx_path)
    if "bert" in inputs:
        raise UnsupportedError(f"{onnx_path} takes a 'bert' input (BERT embeddings), which vitsq does not support")
    missing = {"input", "input_lengths", "scales"} - inputs
    if missing:
        raise ModelLoadError(f"{onnx_path} lacks inputs {sorted(missing)}: not a Vosk TTS graph")
    if not (folder / "dictionary").is_file():
        raise ModelLoadError(f"Vosk model folder {folder} has no dictionary file (needed by the Russian front-end)")
    id_map_raw = raw.get("phoneme_id_map")
    if not isinstance(id_map_raw, dict) or not id_map_raw:
        raise ModelLoadError(f"{folder / 'config.json'}: missing phoneme_id_map")
    try:
        id_map = {str(k): (int(v),) if isinstance(v, int) else tuple(int(i) for i in v) for k, v in id_map_raw.items()}
    except (TypeError, ValueError) as exc:
        raise ModelLoadError(f"{folder / 'config.json'}: bad phoneme_id_map: {exc}") from exc
    inference = raw.get("inference") or {}
    if "sid" in inputs:
        n_speakers = n_spk_onnx or int(raw.get("num_speakers") or len(raw.get("speaker_id_map") or {}) or 1)
    else:
        n_speakers = 1
    base = preset_config()
    try:
        speech_rate = float(inference.get("speech_rate", 1.0))
        cfg = base.replace(
            n_vocab=max(max(v) for v in id_map.values()) + 1,
            phoneme_id_map=id_map,
            n_speakers=n_speakers,
            sample_rate=int((raw.get("audio") or {}).get("sample_rate", base.sample_rate)),
            add_blank=not raw.get("no_blank", 0),
            noise_scale=float(inference.get("noise_level", 0.8)),
            length_scale=1.0 / speech_rate,
            noise_w=float(inference.get("duration_noise_level", 0.8)),
            speaker_id_map={str(k): int(v) for k, v in (raw.get("speaker_id_map") or {}).items()},
            source=str(folder),
        )
    except (TypeError, ValueError, ZeroDivisionError) as exc:
        raise ModelLoadError(f"{folder / 'config.json'}: {exc}") from exc
    return cfg, raw


def load_vosk_dir(path: str | Path, backend: str = "onnx", device: str = "cpu", *, threads: int | None = None):
    """A Vosk model folder behind the Synthesizer interface (ONNX Runtime backend only)."""
    from vitsq.backends.onnx import OnnxSynthesizer
    from vitsq.text.russian import RussianFrontend

    folder = Path(path)
    cfg, raw = read_vosk_dir_config(folder)
    if backend != "onnx":
        raise UnsupportedError(
            f"a Vosk model folder runs on the onnx backend (use --backend onnx), not {backend!r}; "
            "for the torch backend load the training checkpoint G_*.pth with its config.json"
        )
    frontend = RussianFrontend(cfg, folder / "dictionary")
    scale = (raw.get("inference") or {}).get("scale", 1.0)
    if scale != 1.0:
        log.info("%s: ignoring the runtime's output gain inference.scale=%s", folder, scale)
    return OnnxSynthesizer(folder / "model.onnx", cfg, folder.name, frontend, threads=threads, label="trained",
                           artifact_paths=[folder / "model.onnx", folder / "dictionary", folder / "config.json"],
                           extra_info={"source": str(folder), "format": "vosk model folder"})
