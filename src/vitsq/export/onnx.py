"""ONNX export with the Piper and Vosk runtime contracts, and loading of what we export.

Graph contract (both flavors):

* inputs ``input`` [B, T] int64 symbol ids (zero-padded), ``input_lengths`` [B] int64,
  ``scales`` [3] float32 = (noise_scale, length_scale, noise_w) -- the order in which both the
  ``vosk-tts`` runtime (``[noise_level, 1 / speech_rate, duration_noise_level]``) and
  ``piper-tts`` (``[noise_scale, length_scale, noise_w_scale]``) pass them -- and ``sid`` [B]
  int64. The Vosk flavor always has ``sid`` (the runtime always feeds it); the Piper flavor has it
  only for multi-speaker voices (Piper feeds it only then, and ONNX Runtime rejects unknown
  inputs).
* outputs ``output`` [B, 1, S] float32 audio (padded), then ``durations`` [B, 1, T] (frames per
  symbol: the tensor Piper reads as ``result[1]`` for phoneme alignments) and ``output_lengths``
  [B] int64 (valid samples per item, which lets :class:`~vitsq.synth.OnnxSynthesizer` batch).
  Both runtimes read ``result[0]`` only (Piper reads ``result[1]`` only with
  ``include_alignments``, and then expects exactly the per-symbol durations), so the extra
  outputs are harmless to them.

Batch, symbol and sample axes are dynamic. Noise is drawn inside the graph (``RandomNormalLike``),
so only zero-noise outputs can be compared bit-for-bit with PyTorch.

The model is exported through :class:`TtsGraph`, an explicit wrapper that chains the model's
stages; the model's own ``forward``/``infer`` are not touched. ``metadata_props`` carry the
sample rate, symbol map, speakers, the full :class:`~vitsq.models.config.VitsConfig` and the
quantization recipe, so a bare ``.onnx`` describes itself (:func:`load_exported_onnx`).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from vitsq.errors import InputError, ModelLoadError, UnsupportedError
from vitsq.outputs import atomic_output, check_output

if TYPE_CHECKING:
    from vitsq.models.config import VitsConfig

log = logging.getLogger(__name__)

FLAVORS = ("piper", "vosk")
FORMATS = ("onnx", "piper", "vosk-dir")
OPSET = 17
META_PREFIX = "vitsq."
EXPORT_VERSION = 1


# =========================================================================== graph wrapper
class TtsGraph(nn.Module):
    """ids, lengths, scales[, sid] -> (audio [B,1,S], durations [B,1,T], output_lengths [B]).

    Holds the model's top-level submodules under their own names (``enc_p``, ``dp``, ``flow``,
    ``dec``, ``emb_g``), so the exported node and weight names are the same as in a Piper voice
    (``/dec/ups.0/ConvTranspose``) and our Piper loader can read the file back. The model itself
    is kept outside the module tree (its stage methods are called, its submodules are ours).
    """

    def __init__(self, model: nn.Module, with_sid: bool) -> None:
        super().__init__()
        model.eval()
        self.__dict__["_model"] = model  # not registered: its children are registered below
        for name, child in model.named_children():
            self.add_module(name, child)
        self.with_sid = with_sid
        self.multi_speaker = model.config.n_speakers > 1
        self.hop = _samples_per_frame(model)

    def forward(self, input: torch.Tensor, input_lengths: torch.Tensor, scales: torch.Tensor,
                sid: torch.Tensor | None = None):
        m = self._model
        noise_scale, length_scale, noise_w = scales[0], scales[1], scales[2]
        b = input.shape[0]
        g = m.speaker_embedding(sid if self.multi_speaker else None, b)  # [B, gin, 1] or None
        h, m_p, logs_p, x_mask = m.encode(input, input_lengths, g)  # [B,H,T], [B,C,T] x2, [B,1,T]
        dp_noise = torch.randn_like(m_p[:, :2, :]) * x_mask * noise_w  # [B, 2, T]
        w_ceil = m.predict_durations(h, x_mask, g, dp_noise, length_scale)  # [B, 1, T]
        m_y, logs_y, y_mask, _attn, y_lengths = m.expand(m_p, logs_p, x_mask, w_ceil)  # [B, C, T_y]
        z_p = m_y + torch.randn_like(m_y) * torch.exp(logs_y) * noise_scale
        z = m.flow_reverse(z_p, y_mask, g)
        audio, _ = m.vocode(z * y_mask, g)  # [B, 1, T_y * hop]
        if self.with_sid and not self.multi_speaker:
            # The Vosk runtime always feeds sid; keep it a graph input of single-speaker models
            # with a no-op dependency (ONNX Runtime refuses inputs that are not in the graph).
            audio = audio + (sid[:1] * 0).to(audio.dtype).view(1, 1, 1)
        return audio, w_ceil, y_lengths * self.hop


def _samples_per_frame(model: nn.Module) -> int:
    """Audio samples per latent frame, measured with a tiny forward pass (decoder-agnostic)."""
    with torch.inference_mode():
        z = torch.zeros(1, model.config.inter_channels, 4)
        g = model.speaker_embedding(torch.zeros(1, dtype=torch.long), 1) if model.config.n_speakers > 1 else None
        audio, _ = model.vocode(z, g)
    return int(audio.shape[-1]) // 4


# =========================================================================== helpers
def _torch_model(synth_or_model: Any) -> tuple[nn.Module, Any]:
    """(FP32 torch model, synthesizer or None) from a TorchSynthesizer or a VITS module."""
    from vitsq.models.vits import VITS

    if isinstance(synth_or_model, VITS):
        return synth_or_model, None
    model = getattr(synth_or_model, "model", None)
    backend = getattr(synth_or_model, "backend", type(synth_or_model).__name__)
    if not isinstance(model, VITS):
        raise UnsupportedError(
            f"ONNX export needs a PyTorch VITS/VITS2 model (torch backend), got backend {backend!r}: "
            "load the model with backend='torch'")
    if getattr(synth_or_model, "quantization", None):
        raise UnsupportedError(
            "ONNX export takes the FP32 PyTorch model; this one is quantized "
            f"({synth_or_model.quantization}). Export FP32 and quantize the ONNX with the "
            "ort-static or ort-dynamic recipe instead")
    return model, synth_or_model


def default_flavor(config: "VitsConfig") -> str:
    """``vosk`` for Vosk Russian models (VITS2 or vosk_ru front-end), else ``piper``."""
    return "vosk" if (config.arch == "vits2" or config.phoneme_type == "vosk_ru") else "piper"


def example_inputs(config: "VitsConfig", with_sid: bool, lengths=(12, 7)):
    """A padded batch of plausible ids for tracing and checks (never all blanks)."""
    b, t = len(lengths), max(lengths)
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(1, config.n_vocab, (b, t), generator=gen)
    for i, n in enumerate(lengths):
        x[i, n:] = 0
    args = [x, torch.tensor(lengths, dtype=torch.long), torch.tensor([0.667, 1.0, 0.8])]
    if with_sid:
        args.append(torch.arange(b, dtype=torch.long) % max(config.n_speakers, 1))
    return tuple(args)


def set_metadata(proto: Any, meta: dict[str, str]) -> None:
    """Replace our ``vitsq.*`` entries of ``metadata_props`` (others are kept)."""
    keep = [p for p in proto.metadata_props if not p.key.startswith(META_PREFIX) and p.key not in meta]
    del proto.metadata_props[:]
    for p in keep:
        proto.metadata_props.add(key=p.key, value=p.value)
    for k, v in meta.items():
        proto.metadata_props.add(key=k, value=v)


def read_metadata(proto: Any) -> dict[str, str]:
    return {p.key: p.value for p in proto.metadata_props}


def build_metadata(config: "VitsConfig", flavor: str, *, name: str, weights: str,
                   quantization: dict | None) -> dict[str, str]:
    """The ``metadata_props`` we write: sample rate, symbols, speakers, config, recipe; Piper-flavor
    graphs also carry the keys sherpa-onnx reads (:func:`sherpa_metadata`)."""
    meta = {
        f"{META_PREFIX}export_version": str(EXPORT_VERSION),
        f"{META_PREFIX}flavor": flavor,
        f"{META_PREFIX}name": name,
        f"{META_PREFIX}weights": weights,
        "sample_rate": str(config.sample_rate),
        "num_speakers": str(config.n_speakers),
        "speaker_id_map": json.dumps(dict(config.speaker_id_map), ensure_ascii=False),
        "phoneme_id_map": json.dumps({k: list(v) for k, v in config.phoneme_id_map.items()}, ensure_ascii=False),
        "phoneme_type": config.phoneme_type,
        "language": config.language,
        f"{META_PREFIX}config": json.dumps(config.to_dict(), ensure_ascii=False),
        f"{META_PREFIX}quantization": json.dumps(quantization),
    }
    if flavor == "piper":
        meta.update(sherpa_metadata(config))
    return meta


# =========================================================================== sherpa-onnx keys
#: The symbols sherpa-onnx's Piper tokenizer builds every id sequence from (BOS, EOS, pad).
SHERPA_SPECIAL = ("^", "$", "_")


def sherpa_unfit_reason(config: "VitsConfig") -> str | None:
    """Why sherpa-onnx cannot run this model's symbols, or None when it can.

    sherpa-onnx runs Piper graphs (input, input_lengths, scales[, sid]) and turns phonemes into
    ids itself: one Unicode character per ``tokens.txt`` line, one id each, laid out as
    ``^ _ p1 _ p2 _ ... $``. A symbol of several characters or several ids cannot be written
    there (sherpa-onnx 2.0.1 exits the process on such a ``tokens.txt``).
    """
    if config.phoneme_type != "espeak":
        multi = sorted(k for k in config.phoneme_id_map if len(k) != 1)
        why = (f"; {len(multi)} of its {len(config.phoneme_id_map)} symbols are several characters long "
               f"({', '.join(multi[:5])}{', ...' if len(multi) > 5 else ''}), which sherpa-onnx's tokens.txt "
               "(one character per token) cannot hold") if multi else ""
        return (f"its {config.phoneme_type!r} front-end has no counterpart in sherpa-onnx, which reads the "
                f"espeak-ng phonemes of Piper voices{why}")
    if not config.add_blank:
        return "it was trained without blanks, and sherpa-onnx always puts the pad symbol between phonemes"
    missing = [s for s in SHERPA_SPECIAL if s not in config.phoneme_id_map]
    if missing:
        return f"its phoneme_id_map lacks {', '.join(repr(s) for s in missing)} (sherpa-onnx needs ^, $ and _)"
    bad = [k for k, v in config.phoneme_id_map.items()
           if k != "\n" and (len(k) != 1 or len(v) != 1 or (k.isspace() and k != " "))]
    if bad:
        return (f"symbols {', '.join(repr(k) for k in bad[:5])} are not one character with one id (the only "
                "form sherpa-onnx's tokens.txt holds)")
    return None


def sherpa_metadata(config: "VitsConfig") -> dict[str, str]:
    """The ``metadata_props`` sherpa-onnx reads for a Piper voice ({} when it cannot run the model).

    2.x reads ``comment`` (``piper`` selects the Piper tokenizer), ``n_speakers``, ``sample_rate``
    and ``language``; releases before 2.0 also read ``model_type``, ``voice`` (the espeak-ng
    voice of their built-in phonemizer), ``has_espeak``, ``add_blank`` (0: the Piper tokenizer
    inserts the pads itself) and ``punctuation``. ``language`` keeps vitsq's value.
    """
    import unicodedata

    if sherpa_unfit_reason(config) is not None:
        return {}
    punct = [k for k in config.phoneme_id_map
             if k not in SHERPA_SPECIAL and unicodedata.category(k).startswith("P")]
    return {
        "model_type": "vits",
        "comment": "piper",
        "n_speakers": str(config.n_speakers),
        "sample_rate": str(config.sample_rate),
        "language": config.language,
        "voice": config.espeak_voice or config.language,
        "has_espeak": "1",
        "add_blank": "0",
        "punctuation": " ".join(punct),
    }


def check_export_output(fmt: str, out: str | Path, force: bool = False) -> Path:
    """Validate ``out`` for ``--format fmt`` before any slow work (see :mod:`vitsq.outputs`).

    ``onnx``: a ``.onnx`` file; ``piper``: ``<name>.onnx`` and its ``<name>.onnx.json``;
    ``vosk-dir``: a folder. Returns ``out`` as a ``Path``.
    """
    if fmt == "vosk-dir":
        return check_output(out, kind="dir", force=force, what="vosk-dir output folder")
    if fmt not in ("onnx", "piper"):
        raise InputError(f"unknown ONNX format {fmt!r}: valid are {', '.join(FORMATS)}")
    what = "Piper voice" if fmt == "piper" else "ONNX output"
    path = check_output(out, kind="file", suffixes=(".onnx",), force=force, what=what)
    if fmt == "piper":
        check_output(Path(str(path) + ".json"), kind="file", suffixes=(".onnx.json",), force=force,
                     what="Piper voice config")
    return path


# =========================================================================== export
def export_onnx(synth_or_model: Any, path: str | Path, flavor: str | None = None, *,
                opset: int = OPSET, force: bool = False, name: str | None = None,
                polyphase_upsampling: bool = False) -> Path:
    """Export an FP32 PyTorch model to one ONNX file with the Piper or Vosk contract.

    Args:
        synth_or_model: a torch-backend Synthesizer or a ``VITS``/``VITS2`` module.
        path: the ``.onnx`` file to write.
        flavor: ``"piper"`` or ``"vosk"`` (see the module docstring); None picks by model.
        force: overwrite an existing ``path``.
        polyphase_upsampling: write the decoder's transposed convolutions as ordinary
            convolutions (:mod:`vitsq.models.polyphase`; same outputs), which ONNX Runtime can
            then run in INT8. Off for FP32 files, which keep the upstream graph structure.
    Returns the written path.
    """
    model, synth = _torch_model(synth_or_model)
    config = model.config
    path = check_export_output("onnx", path, force)
    if polyphase_upsampling:
        from vitsq.models.polyphase import with_polyphase_upsampling

        model = with_polyphase_upsampling(model)
    flavor = flavor or default_flavor(config)
    if flavor not in FLAVORS:
        raise InputError(f"unknown ONNX flavor {flavor!r}: valid flavors are {', '.join(FLAVORS)}")
    with atomic_output(path, kind="file", suffixes=(".onnx",), force=force, what="ONNX output") as tmp:
        _write_onnx(model, synth, tmp, flavor, opset=opset, name=name or getattr(synth, "name", "model"))
    log.info("wrote %s", path)
    return path


def _write_onnx(model: nn.Module, synth: Any, path: Path, flavor: str, *, opset: int, name: str) -> None:
    """``torch.onnx.export`` of :class:`TtsGraph` to ``path`` (written as is), then our metadata."""
    import warnings

    import onnx

    config = model.config
    with_sid = flavor == "vosk" or config.n_speakers > 1
    graph = TtsGraph(model, with_sid).eval()
    args = example_inputs(config, with_sid)
    input_names = ["input", "input_lengths", "scales"] + (["sid"] if with_sid else [])
    output_names = ["output", "durations", "output_lengths"]
    dynamic_axes = {
        "input": {0: "batch", 1: "phonemes"},
        "input_lengths": {0: "batch"},
        "output": {0: "batch", 2: "samples"},
        "durations": {0: "batch", 2: "phonemes"},
        "output_lengths": {0: "batch"},
    }
    if with_sid:
        dynamic_axes["sid"] = {0: "batch"}
    log.info("exporting %s (%s flavor, opset %d)", name, flavor, opset)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TracerWarnings about shape-to-int conversions are expected
        torch.onnx.export(graph, args, str(path), dynamo=False, opset_version=opset,
                          input_names=input_names, output_names=output_names, dynamic_axes=dynamic_axes,
                          do_constant_folding=True)
    proto = onnx.load(str(path))
    set_metadata(proto, build_metadata(config, flavor, name=name, weights=getattr(synth, "label", "trained"),
                                       quantization=None))
    proto.producer_name = "vitsq"
    onnx.save(proto, str(path))


def export_onnx_dir(synth_or_model: Any, out_dir: str | Path, flavor: str | None = None, *,
                    force: bool = False, streaming: bool = True) -> Path:
    """An ONNX artifact folder (kind ``onnx``, read by ``vitsq.load``): the FP32 ``model.onnx``
    (the graph :func:`export_onnx` writes, for the Piper or Vosk runtime) and, with
    ``streaming``, the streaming graphs beside it (:mod:`vitsq.export.onnx_stream`), so the
    ONNX Runtime backend streams chunk by chunk. Returns the folder."""
    from vitsq.export import onnx_stream
    from vitsq.manifest import source_info, write_manifest

    model, synth = _torch_model(synth_or_model)
    flavor = flavor or default_flavor(model.config)
    if flavor not in FLAVORS:
        raise InputError(f"unknown ONNX flavor {flavor!r}: valid flavors are {', '.join(FLAVORS)}")
    out = check_output(out_dir, kind="dir", force=force, what="ONNX artifact folder")
    with atomic_output(out, kind="dir", force=force, what="ONNX artifact folder") as tmp:
        _write_onnx(model, synth, tmp / "model.onnx", flavor, opset=OPSET, name=getattr(synth, "name", "model"))
        extra = {"streaming": onnx_stream.write_streaming_pair(model, tmp / "model.onnx", tmp)} if streaming else {}
        write_manifest(tmp, "onnx", config=model.config,
                       files=["model.onnx"] + onnx_stream.streaming_files(extra.get("streaming")),
                       source=source_info(synth) if synth is not None else {}, quantization=None, flavor=flavor,
                       model_file="model.onnx", **extra)
    log.info("wrote %s", out)
    return out


def _piper_json(synth: Any, config: "VitsConfig", quantization: dict | None = None) -> dict:
    """The voice ``.onnx.json`` for the Piper runtime (the source voice's JSON, kept, if any)."""
    raw: dict[str, Any] = {}
    src = synth.describe().get("source") if synth is not None else None
    if src and str(src).endswith(".onnx"):
        src_json = Path(str(src) + ".json")
        if src_json.is_file():
            raw = json.loads(src_json.read_text(encoding="utf-8"))
    raw.setdefault("audio", {})
    raw["audio"]["sample_rate"] = config.sample_rate
    if config.quality:
        raw["audio"].setdefault("quality", config.quality)
    raw.setdefault("espeak", {"voice": config.espeak_voice or config.language})
    raw["phoneme_type"] = raw.get("phoneme_type", config.phoneme_type)
    raw["inference"] = {"noise_scale": config.noise_scale, "length_scale": config.length_scale,
                        "noise_w": config.noise_w}
    raw["num_symbols"] = config.n_vocab
    raw["num_speakers"] = config.n_speakers
    raw["speaker_id_map"] = dict(config.speaker_id_map)
    raw["phoneme_id_map"] = {k: list(v) for k, v in config.phoneme_id_map.items()}
    raw["hop_length"] = config.hop_length
    raw["vitsq"] = {"exported_from": getattr(synth, "name", None), "quantization": quantization}
    return raw


def check_format_fits(fmt: str, config: "VitsConfig") -> None:
    """Refuse a runtime format the model cannot become (UnsupportedError naming the ones it can)."""
    if fmt == "piper" and config.phoneme_type not in ("espeak", "text"):
        raise UnsupportedError(
            f"the Piper runtime cannot phonemize this model's front-end ({config.phoneme_type!r}); "
            "Piper voices use espeak or text phonemes: export it with --format vosk-dir or --format onnx")
    if fmt == "vosk-dir":
        if config.phoneme_type != "vosk_ru":
            raise UnsupportedError(
                f"the vosk-tts runtime phonemizes Russian text (vosk_ru front-end); this model uses "
                f"{config.phoneme_type!r}: export it with --format piper or --format onnx")
        if not config.add_blank:
            raise UnsupportedError("the vosk-tts runtime always interleaves blanks (g2p_noembed); this model "
                                   "was trained without them: export it with --format onnx")
        if config.sample_rate != 22050:
            raise UnsupportedError(f"the vosk-tts runtime writes 22050 Hz audio; this model is {config.sample_rate} Hz")


def export_piper_voice(synth: Any, path: str | Path, *, force: bool = False) -> Path:
    """``voice.onnx`` + ``voice.onnx.json`` loadable by ``piper.PiperVoice.load``."""
    model, synth = _torch_model(synth)
    config = model.config
    check_format_fits("piper", config)
    check_export_output("piper", path, force)
    return write_piper_voice(
        path, lambda tmp: _write_onnx(model, synth, tmp, "piper", opset=OPSET, name=getattr(synth, "name", "model")),
        _piper_json(synth, config), force=force)


def write_piper_voice(path: str | Path, write_onnx: Any, voice_json: dict, *, force: bool = False) -> Path:
    """Write ``<name>.onnx`` (``write_onnx(tmp_path)`` fills it) and ``<name>.onnx.json`` together.

    Both are written to temporary siblings and moved into place only when both are complete, so an
    interrupted export leaves the previous voice (both files) as it was.
    """
    path = Path(path)
    json_path = Path(str(path) + ".json")
    # the .onnx (inner block) is moved into place first, its config right after it
    with atomic_output(json_path, kind="file", suffixes=(".onnx.json",), force=force,
                       what="Piper voice config") as tmp_json, \
            atomic_output(path, kind="file", suffixes=(".onnx",), force=force, what="Piper voice") as tmp_onnx:
        write_onnx(tmp_onnx)
        tmp_json.write_text(json.dumps(voice_json, indent=2, ensure_ascii=False), encoding="utf-8")
    log.info("wrote %s and %s", path, json_path.name)
    return path


def vosk_runtime_config(config: "VitsConfig", quantization: dict | None = None) -> dict:
    """``config.json`` of a Vosk model folder, in the keys the ``vosk-tts`` runtime reads."""
    return {
        "audio": {"sample_rate": config.sample_rate},
        "inference": {
            # Synth.synth_audio: scales = [noise_level, 1 / speech_rate, duration_noise_level]
            "noise_level": config.noise_scale,
            "speech_rate": 1.0 / config.length_scale,
            "duration_noise_level": config.noise_w,
            "scale": 1.0,
        },
        "phoneme_id_map": {k: list(v) for k, v in config.phoneme_id_map.items()},
        "num_symbols": config.n_vocab,
        "num_speakers": config.n_speakers,
        "speaker_id_map": dict(config.speaker_id_map),
        "no_blank": 0 if config.add_blank else 1,
        "vitsq": {"quantization": quantization},
    }


def write_dictionary(synth: Any, out: Path) -> str:
    """Write the ``dictionary`` file the runtime opens; returns where it came from.

    Copies the source folder's file if the model came from a Vosk folder; otherwise writes the
    front-end's own pronunciations (``word 1.0 phonemes``), possibly none -- an empty file is what
    the runtime reads as "rules only", which is exactly what our front-end then does too.
    """
    src = synth.describe().get("source") if synth is not None else None
    if src:
        for cand in (Path(src) / "dictionary", Path(src).parent / "dictionary"):
            if cand.is_file():
                shutil.copyfile(cand, out)
                return str(cand)
    entries = getattr(getattr(synth, "frontend", None), "dictionary", None) or {}
    with open(out, "w", encoding="utf-8") as f:
        for word, phonemes in entries.items():
            f.write(f"{word} 1.0 {' '.join(phonemes)}\n")
    return f"front-end ({len(entries)} entries)"


def export_vosk_dir(synth: Any, out_dir: str | Path, *, force: bool = False,
                    onnx_file: str | Path | None = None, quantization: dict | None = None,
                    config: "VitsConfig | None" = None, streaming: bool = False,
                    stream: dict | None = None) -> Path:
    """A folder the ``vosk-tts`` runtime loads as is: model.onnx, config.json, dictionary.

    ``onnx_file``: an already exported (e.g. quantized) Vosk-flavor ONNX to place instead of
    exporting the FP32 model. A ``vitsq.json`` manifest (kind ``vosk-dir``) is added for vitsq.
    ``streaming``: also write the streaming graphs of the FP32 model
    (:mod:`vitsq.export.onnx_stream`); ``stream``: the streaming record of ``onnx_file``'s
    artifact (:func:`~vitsq.export.onnx_stream.read_streaming`), whose graphs are copied. The
    ``vosk-tts`` runtime ignores them.
    """
    from vitsq.export import onnx_stream
    from vitsq.manifest import source_info, write_manifest

    model, synth = _torch_model(synth) if onnx_file is None else (getattr(synth, "model", None), synth)
    config = config or (synth.config if synth is not None else model.config)
    check_format_fits("vosk-dir", config)
    out = Path(out_dir)
    with atomic_output(out, kind="dir", force=force, what="vosk-dir output folder") as tmp:
        if onnx_file is None:
            _write_onnx(model, synth, tmp / "model.onnx", "vosk", opset=OPSET, name=getattr(synth, "name", "model"))
        else:
            shutil.copyfile(onnx_file, tmp / "model.onnx")
        (tmp / "config.json").write_text(json.dumps(vosk_runtime_config(config, quantization), indent=2,
                                                    ensure_ascii=False), encoding="utf-8")
        dict_src = write_dictionary(synth, tmp / "dictionary")
        extra = {}
        if streaming and onnx_file is None:
            extra["streaming"] = onnx_stream.write_streaming_pair(model, tmp / "model.onnx", tmp)
        elif stream is not None:
            extra["streaming"] = onnx_stream.copy_streaming(stream, tmp)
        files = ["model.onnx", "config.json", "dictionary"] + onnx_stream.streaming_files(extra.get("streaming"))
        write_manifest(tmp, "vosk-dir", config=config, files=files,
                       source=source_info(synth) if synth is not None else {}, quantization=quantization,
                       flavor="vosk", dictionary_source=dict_src, **extra)
    log.info("wrote %s", out)
    return out


def export(synth: Any, fmt: str, out: str | Path, *, force: bool = False) -> Path:
    """Dispatch ``vitsq export --format`` for the ONNX formats."""
    if fmt == "onnx":
        return export_onnx(synth, out, force=force)
    if fmt == "piper":
        return export_piper_voice(synth, out, force=force)
    if fmt == "vosk-dir":
        return export_vosk_dir(synth, out, force=force)
    raise InputError(f"unknown ONNX format {fmt!r}: valid are {', '.join(FORMATS)}")


#: The runtime flavor a format needs its graph in (``None``: any).
FORMAT_FLAVOR = {"onnx": None, "piper": "piper", "vosk-dir": "vosk"}


def export_onnx_artifact(directory: str | Path, fmt: str, out: str | Path, *, force: bool = False,
                         source_synth: Any = None) -> Path:
    """Write an ONNX artifact folder (kind ``onnx`` or ``vosk-dir``, e.g. from ``vitsq quantize
    --recipe ort-static``) as ``fmt``: its ``model.onnx`` (metadata included) reused as is, with
    the format's side files (Piper ``.onnx.json``; Vosk ``config.json`` + ``dictionary``).

    A format the artifact cannot become (another runtime flavor, another front-end) is an
    UnsupportedError saying how to get it. ``source_synth``: the model the artifact was made from,
    when at hand (its source files, e.g. the original Piper voice JSON, are kept).
    """
    from vitsq.manifest import manifest_config, read_manifest

    directory = Path(directory)
    if fmt not in FORMATS:
        raise InputError(f"unknown ONNX format {fmt!r}: valid are {', '.join(FORMATS)}")
    manifest = read_manifest(directory)
    kind = manifest["kind"]
    if kind not in ("onnx", "vosk-dir"):
        raise UnsupportedError(f"{directory} is a {kind} artifact; only ONNX artifacts (kind onnx or vosk-dir) "
                               f"export as --format {fmt}: export the source model instead")
    config = manifest_config(manifest)
    check_format_fits(fmt, config)
    flavor, need = manifest.get("flavor"), FORMAT_FLAVOR[fmt]
    if need is not None and flavor != need:
        raise UnsupportedError(f"{directory} holds a {flavor!r}-flavor graph, but --format {fmt} needs the {need!r} "
                               f"runtime contract: export the source model with --format {fmt} and its --recipe")
    out = check_export_output(fmt, out, force)
    model_file = directory / manifest.get("model_file", "model.onnx")
    quant = manifest.get("quantization")
    if fmt == "onnx":
        with atomic_output(out, kind="file", suffixes=(".onnx",), force=force, what="ONNX output") as tmp:
            shutil.copyfile(model_file, tmp)
        return out
    source = manifest.get("source") or {}
    if fmt == "piper":
        if source_synth is None:
            source_synth = _SourceRecord(source.get("name") or directory.name, source.get("source"),
                                         source.get("weights", "unknown"))
        return write_piper_voice(out, lambda tmp: shutil.copyfile(model_file, tmp),
                                 _piper_json(source_synth, config, quant), force=force)
    if source_synth is None:
        # a vosk-dir artifact's own dictionary is kept (write_dictionary looks in the source folder)
        has_dict = "dictionary" in manifest["files"]
        source_synth = _SourceRecord(source.get("name") or directory.name, str(directory) if has_dict else None,
                                     source.get("weights", "unknown"))
    from vitsq.backends.onnx import read_streaming

    return export_vosk_dir(source_synth, out, force=force, onnx_file=model_file, quantization=quant, config=config,
                           stream=read_streaming(manifest, directory))


class _SourceRecord:
    """Name and source path of the model an artifact came from (what the writers of side files read)."""

    def __init__(self, name: str, source: str | None, label: str) -> None:
        self.name = name
        self.label = label
        self._source = source

    def describe(self) -> dict[str, Any]:
        return {"source": self._source}


# =========================================================================== loading
def _config_from_metadata(path: Path, meta: dict[str, str]) -> "VitsConfig":
    from vitsq.models.config import VitsConfig

    raw = meta.get(f"{META_PREFIX}config")
    if raw is None:
        raise ModelLoadError(
            f"{path} has no {META_PREFIX}config metadata: not exported by vitsq. A Piper voice needs "
            f"its .onnx.json beside it; a Vosk model needs its folder (model.onnx + config.json)")
    try:
        return VitsConfig.from_dict(json.loads(raw))
    except (json.JSONDecodeError, TypeError, ValueError) as exc:
        raise ModelLoadError(f"{path}: invalid {META_PREFIX}config metadata: {exc}") from exc


def load_exported_onnx(path: str | Path, backend: str = "onnx", device: str = "cpu", **kw: Any):
    """An ONNX written by vitsq (bare file, config in ``metadata_props``) as an OnnxSynthesizer."""
    import onnx

    from vitsq.backends.onnx import OnnxSynthesizer
    from vitsq.text import make_frontend

    path = Path(path)
    if backend != "onnx":
        raise UnsupportedError(f"{path} is an ONNX graph: it runs on backend 'onnx', not {backend!r}")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ModelLoadError(f"{path} is not a readable ONNX model (truncated or corrupt?): {exc}") from exc
    meta = read_metadata(proto)
    config = _config_from_metadata(path, meta)
    quant = json.loads(meta.get(f"{META_PREFIX}quantization", "null"))
    name = kw.get("name") or meta.get(f"{META_PREFIX}name") or path.stem
    return OnnxSynthesizer(path, config, name, make_frontend(config), threads=kw.get("threads"),
                           label=meta.get(f"{META_PREFIX}weights", "trained"), quantization=quant,
                           extra_info={"source": str(path), "flavor": meta.get(f"{META_PREFIX}flavor")})


def load_onnx_artifact(directory: str | Path, manifest: dict, backend: str = "onnx", device: str = "cpu",
                       **kw: Any):
    """A vitsq artifact folder of kind ``onnx`` or ``vosk-dir`` (``model.onnx`` + ``vitsq.json``)."""
    from vitsq.backends.onnx import OnnxSynthesizer, read_streaming
    from vitsq.manifest import manifest_config, verify_manifest
    from vitsq.text import make_frontend

    directory = Path(directory)
    if backend != "onnx":
        raise UnsupportedError(f"{directory} holds an ONNX model: it runs on backend 'onnx', not {backend!r}")
    verify_manifest(directory, manifest)
    config = manifest_config(manifest)
    onnx_path = directory / manifest.get("model_file", "model.onnx")
    dictionary = directory / "dictionary"
    frontend = make_frontend(config, dictionary=str(dictionary)) if (
        config.phoneme_type == "vosk_ru" and "dictionary" in manifest["files"]) else make_frontend(config)
    source = manifest.get("source") or {}
    return OnnxSynthesizer(onnx_path, config, kw.get("name") or source.get("name") or directory.name, frontend,
                           threads=kw.get("threads"), label=source.get("weights", "trained"),
                           artifact_paths=[onnx_path], quantization=manifest.get("quantization"),
                           extra_info={"source": str(directory), "kind": manifest["kind"]},
                           stream=read_streaming(manifest, directory))
