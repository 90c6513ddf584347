"""Configuration of the VITS family (Piper VITS and Vosk MB-iSTFT-VITS2).

One frozen dataclass, built from the upstream JSON files: Piper's ``.onnx.json`` and the
``config.json`` of the vosk-tts training code (hps format with ``data`` and ``model`` sections).
Derived values are properties; invalid values raise ``ValueError`` naming the field.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

ARCHS = ("vits", "vits2")
DECODERS = ("hifigan", "mb_istft")
FLOW_TYPES = ("residual_coupling", "pre_conv2")
PHONEME_TYPES = ("espeak", "text", "vosk_ru")


@dataclass(frozen=True)
class VitsConfig:
    """Architecture, audio and inference settings of a VITS-family model."""

    arch: str = "vits"  # "vits" (Piper) or "vits2" (Vosk MB-iSTFT-VITS2)
    n_vocab: int = 256
    inter_channels: int = 192
    hidden_channels: int = 192
    filter_channels: int = 768
    n_heads: int = 2
    n_layers: int = 6
    kernel_size: int = 3
    p_dropout: float = 0.1
    resblock: str = "1"
    resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11)
    resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    upsample_rates: tuple[int, ...] = (8, 8, 2, 2)
    upsample_initial_channel: int = 512
    upsample_kernel_sizes: tuple[int, ...] = (16, 16, 4, 4)
    n_speakers: int = 1
    gin_channels: int = 0
    use_sdp: bool = True
    # flow
    flow_type: str = "residual_coupling"
    n_flows: int = 4
    flow_wn_layers: int = 4
    flow_kernel_size: int = 5
    # decoder
    decoder: str = "hifigan"
    subbands: int = 1
    istft_n_fft: int = 16
    istft_hop: int = 4
    # VITS2 text encoder speaker conditioning
    use_spk_conditioned_encoder: bool = False
    cond_layer_idx: int = 2
    # audio
    sample_rate: int = 22050
    hop_length: int = 256
    # front-end
    phoneme_type: str = "espeak"
    language: str = "en"
    espeak_voice: str = ""
    phoneme_id_map: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    speaker_id_map: Mapping[str, int] = field(default_factory=dict)
    add_blank: bool = True
    # inference defaults
    noise_scale: float = 0.667
    length_scale: float = 1.0
    noise_w: float = 0.8
    # provenance
    quality: str = ""
    source: str = ""

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> ValueError:
            return ValueError(f"invalid model config: {name}={getattr(self, name)!r}: {why}")

        if self.arch not in ARCHS:
            raise bad("arch", f"valid values are {', '.join(ARCHS)}")
        if self.decoder not in DECODERS:
            raise bad("decoder", f"valid values are {', '.join(DECODERS)}")
        if self.flow_type not in FLOW_TYPES:
            raise bad("flow_type", f"valid values are {', '.join(FLOW_TYPES)}")
        if self.phoneme_type not in PHONEME_TYPES:
            raise bad("phoneme_type", f"valid values are {', '.join(PHONEME_TYPES)}")
        if self.resblock not in ("1", "2"):
            raise bad("resblock", 'valid values are "1" and "2"')
        for name in ("n_vocab", "inter_channels", "hidden_channels", "filter_channels", "n_heads",
                     "n_layers", "kernel_size", "upsample_initial_channel", "n_speakers",
                     "sample_rate", "hop_length", "n_flows", "flow_wn_layers", "subbands"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise bad(name, "must be a positive integer")
        if self.hidden_channels % self.n_heads:
            raise bad("hidden_channels", f"must be divisible by n_heads={self.n_heads}")
        if self.inter_channels % 2:
            raise bad("inter_channels", "must be even (the coupling flow splits it in halves)")
        if self.n_speakers > 1 and self.gin_channels < 1:
            raise bad("gin_channels", "a multi-speaker model needs gin_channels > 0")
        if len(self.upsample_rates) != len(self.upsample_kernel_sizes):
            raise bad("upsample_kernel_sizes", "needs one entry per upsample rate")
        if len(self.resblock_kernel_sizes) != len(self.resblock_dilation_sizes):
            raise bad("resblock_dilation_sizes", "needs one entry per resblock kernel size")
        if self.decoder == "mb_istft":
            if self.subbands < 2:
                raise bad("subbands", "the multi-band iSTFT decoder needs >= 2 sub-bands")
            total = 1
            for r in self.upsample_rates:
                total *= r
            if total * self.istft_hop * self.subbands != self.hop_length:
                raise bad("hop_length", "must equal prod(upsample_rates) * istft_hop * subbands")
        else:
            total = 1
            for r in self.upsample_rates:
                total *= r
            if total != self.hop_length:
                raise bad("hop_length", f"must equal prod(upsample_rates)={total}")
        if self.use_spk_conditioned_encoder and not 0 <= self.cond_layer_idx < self.n_layers:
            raise bad("cond_layer_idx", f"must be in 0..{self.n_layers - 1}")
        for name in ("noise_scale", "length_scale", "noise_w"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or v < 0:
                raise bad(name, "must be a number >= 0")
        if self.length_scale <= 0:
            raise bad("length_scale", "must be > 0")
        for sym, ids in self.phoneme_id_map.items():
            for i in ids:
                if not 0 <= i < self.n_vocab:
                    raise ValueError(
                        f"invalid model config: phoneme_id_map[{sym!r}] = {i} is outside 0..{self.n_vocab - 1}"
                    )

    # ----------------------------------------------------------------- derived values
    @property
    def upsample_factor(self) -> int:
        """Audio samples per latent frame (= hop_length)."""
        return self.hop_length

    @property
    def multi_speaker(self) -> bool:
        return self.n_speakers > 1

    @property
    def half_channels(self) -> int:
        return self.inter_channels // 2

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["phoneme_id_map"] = {k: list(v) for k, v in self.phoneme_id_map.items()}
        d["speaker_id_map"] = dict(self.speaker_id_map)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "VitsConfig":
        """Inverse of :meth:`to_dict` (our own manifest format)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"invalid model config: unknown fields {', '.join(unknown)}")
        kw = dict(d)
        for k in ("resblock_kernel_sizes", "upsample_rates", "upsample_kernel_sizes"):
            if k in kw:
                kw[k] = tuple(kw[k])
        if "resblock_dilation_sizes" in kw:
            kw["resblock_dilation_sizes"] = tuple(tuple(x) for x in kw["resblock_dilation_sizes"])
        if "phoneme_id_map" in kw:
            kw["phoneme_id_map"] = {k: tuple(v) for k, v in kw["phoneme_id_map"].items()}
        return cls(**kw)

    def replace(self, **changes: Any) -> "VitsConfig":
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ Piper
    @classmethod
    def from_piper_json(cls, cfg: Mapping[str, Any], source: str = "") -> "VitsConfig":
        """Build from a Piper voice's ``.onnx.json``.

        Piper's JSON does not carry the architecture hyper-parameters; they follow from the
        ``audio.quality`` setting (x_low/low use a smaller network, high uses the v1 decoder)
        and are confirmed against the weights by the loader (see ``piper_onnx.infer_arch``).
        """
        try:
            audio = cfg["audio"]
            sample_rate = int(audio["sample_rate"])
            id_map = {str(k): tuple(int(i) for i in v) for k, v in cfg["phoneme_id_map"].items()}
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"invalid Piper voice config: missing or bad field {exc}") from exc
        quality = str(audio.get("quality", "medium"))
        n_speakers = int(cfg.get("num_speakers", 1))
        n_vocab = int(cfg.get("num_symbols", max((max(v) for v in id_map.values()), default=0) + 1))
        inference = cfg.get("inference", {})
        phoneme_type = str(cfg.get("phoneme_type", "espeak"))
        if phoneme_type not in ("espeak", "text"):
            raise ValueError(f"invalid Piper voice config: phoneme_type={phoneme_type!r}: valid values are espeak, text")
        lang = cfg.get("language", {}).get("code", "") or cfg.get("espeak", {}).get("voice", "")
        kw: dict[str, Any] = dict(
            arch="vits",
            n_vocab=n_vocab,
            n_speakers=n_speakers,
            gin_channels=512 if n_speakers > 1 else 0,
            sample_rate=sample_rate,
            phoneme_type=phoneme_type,
            language=str(lang).split("_")[0].split("-")[0].lower() or "en",
            espeak_voice=str(cfg.get("espeak", {}).get("voice", "")),
            phoneme_id_map=id_map,
            speaker_id_map={str(k): int(v) for k, v in cfg.get("speaker_id_map", {}).items()},
            noise_scale=float(inference.get("noise_scale", 0.667)),
            length_scale=float(inference.get("length_scale", 1.0)),
            noise_w=float(inference.get("noise_w", 0.8)),
            quality=quality,
            source=source,
        )
        if quality in ("x_low", "low"):
            kw.update(hidden_channels=96, inter_channels=96, filter_channels=384,
                      upsample_initial_channel=256)
        else:
            kw.update(hidden_channels=192, inter_channels=192, filter_channels=768)
        if quality == "high":
            kw.update(resblock="1", resblock_kernel_sizes=(3, 7, 11),
                      resblock_dilation_sizes=((1, 3, 5), (1, 3, 5), (1, 3, 5)),
                      upsample_rates=(8, 8, 2, 2), upsample_initial_channel=512,
                      upsample_kernel_sizes=(16, 16, 4, 4))
        else:
            kw.update(resblock="2", resblock_kernel_sizes=(3, 5, 7),
                      resblock_dilation_sizes=((1, 2), (2, 6), (3, 12)),
                      upsample_rates=(8, 8, 4), upsample_kernel_sizes=(16, 16, 8))
            kw.setdefault("upsample_initial_channel", 256)
            if quality not in ("x_low", "low"):
                kw["upsample_initial_channel"] = 256
        return cls(**kw)

    # ------------------------------------------------------------------ Vosk
    @classmethod
    def from_vosk_json(cls, cfg: Mapping[str, Any], source: str = "") -> "VitsConfig":
        """Build from the vosk-tts training ``config.json`` (``data`` + ``model`` sections)."""
        from vitsq.models.vosk_config import vosk_config_kwargs

        return cls(**vosk_config_kwargs(cfg), source=source)

    @classmethod
    def from_file(cls, path: str | Path) -> "VitsConfig":
        """Read either a Piper ``.onnx.json`` or a Vosk ``config.json``."""
        path = Path(path)
        try:
            cfg = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ValueError(f"config file not found: {path}") from exc
        except json.JSONDecodeError as exc:
            raise ValueError(f"config file {path} is not valid JSON: {exc}") from exc
        if "model" in cfg and "data" in cfg:
            return cls.from_vosk_json(cfg, source=str(path))
        if "audio" in cfg and "phoneme_id_map" in cfg:
            return cls.from_piper_json(cfg, source=str(path))
        raise ValueError(
            f"{path}: not a Piper voice config (needs 'audio' and 'phoneme_id_map') "
            "nor a Vosk training config (needs 'data' and 'model')"
        )
