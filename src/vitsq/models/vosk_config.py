"""Map the vosk-tts training ``config.json`` (hps format) onto :class:`VitsConfig` fields.

Only the architecture that the Vosk Russian models use is supported: VITS2 with a
speaker-conditioned text encoder, ``pre_conv2`` transformer-coupling flow and the multi-band
iSTFT decoder. Options that select anything else are rejected by name, as are keys that this
module does not know; keys that only matter for training (discriminators, losses, mel
settings of the posterior encoder, data files) are accepted and ignored.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

from vitsq.errors import ModelLoadError

log = logging.getLogger(__name__)

N_SYMBOLS_RU = 62  # len(symbols) of the Vosk Russian models

# Runtime defaults of the vosk-tts package (Synth.synth_audio) when config.json has none.
DEFAULT_NOISE_SCALE = 0.8
DEFAULT_NOISE_W = 0.8
DEFAULT_LENGTH_SCALE = 1.0


class VoskConfigError(ModelLoadError, ValueError):
    """A Vosk ``config.json`` that is malformed or selects an unsupported architecture."""


# data section: keys we read, and keys that only configure training data / mel features
_DATA_USED = {"sampling_rate", "hop_length", "add_blank", "n_speakers"}
_DATA_TRAINING_ONLY = {
    "use_mel_posterior_encoder", "training_files", "validation_files", "text_cleaners",
    "max_wav_value", "filter_length", "win_length", "n_mel_channels", "mel_fmin", "mel_fmax",
    "cleaned_text", "g2p_text", "aligned_text",
}
# model section
_MODEL_USED = {
    "inter_channels", "hidden_channels", "filter_channels", "n_heads", "n_layers", "kernel_size",
    "p_dropout", "resblock", "resblock_kernel_sizes", "resblock_dilation_sizes", "upsample_rates",
    "upsample_initial_channel", "upsample_kernel_sizes", "gin_channels", "use_sdp", "subbands",
    "gen_istft_n_fft", "gen_istft_hop_size", "use_spk_conditioned_encoder",
}
_MODEL_TRAINING_ONLY = {
    "use_mel_posterior_encoder", "use_noise_scaled_mas", "mas_noise_scale_initial",
    "noise_scale_delta", "use_duration_discriminator", "duration_discriminator_type", "n_layers_q",
    "use_wd", "slm_model", "slm_sr", "slm_hidden", "slm_nlayers", "slm_initial_channel",
}
# model options that must have one value: (key, required value, what the value selects)
_MODEL_REQUIRED = {
    "use_transformer_flows": (True, "the transformer-coupling flow"),
    "transformer_flow_type": ("pre_conv2", "the flow type of the Vosk models"),
    "mb_istft_vits": (True, "the multi-band iSTFT decoder"),
    "ms_istft_vits": (False, "the multi-stream iSTFT decoder is not supported"),
    "istft_vits": (False, "the single-band iSTFT decoder is not supported"),
    "use_spectral_norm": (False, "spectral-norm checkpoints are not supported"),
}
_TOP_LEVEL = {"train", "data", "model", "model_dir"}


def _section(cfg: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    sec = cfg.get(name)
    if not isinstance(sec, Mapping):
        raise VoskConfigError(f"Vosk config: missing or invalid '{name}' section (expected an object)")
    return sec


def _get(sec: Mapping[str, Any], section: str, key: str, kind: type, default: Any = None) -> Any:
    if key not in sec:
        if default is None:
            raise VoskConfigError(f"Vosk config: missing {section}.{key}")
        return default
    value = sec[key]
    ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        ok, value = True, float(value)
    if not ok:
        raise VoskConfigError(f"Vosk config: {section}.{key}={value!r} must be of type {kind.__name__}")
    return value


def _int_tuple(sec: Mapping[str, Any], section: str, key: str) -> tuple[int, ...]:
    value = sec.get(key)
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise VoskConfigError(f"Vosk config: {section}.{key}={value!r} must be a list of integers")
    return tuple(value)


def _sections(cfg: Mapping[str, Any]) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    """The ``data`` and ``model`` sections; unknown keys (top level or in a section) are refused."""
    if not isinstance(cfg, Mapping):
        raise VoskConfigError("Vosk config: expected a JSON object with 'data' and 'model' sections")
    unknown_top = sorted(set(cfg) - _TOP_LEVEL)
    if unknown_top:
        raise VoskConfigError(
            f"Vosk config: unknown top-level keys {', '.join(unknown_top)} (known: {', '.join(sorted(_TOP_LEVEL))})"
        )
    data = _section(cfg, "data")
    model = _section(cfg, "model")
    for sec, name, used, ignored in (
        (data, "data", _DATA_USED, _DATA_TRAINING_ONLY),
        (model, "model", _MODEL_USED | set(_MODEL_REQUIRED), _MODEL_TRAINING_ONLY),
    ):
        unknown = sorted(set(sec) - used - ignored)
        if unknown:
            raise VoskConfigError(
                f"Vosk config: unknown or unsupported {name} options {', '.join(unknown)}; "
                f"supported: {', '.join(sorted(used))} (training-only, ignored: {', '.join(sorted(ignored))})"
            )
        skipped = sorted(set(sec) & ignored)
        if skipped:
            log.debug("Vosk config: ignoring training-only %s options %s", name, ", ".join(skipped))
    return data, model


def _check_architecture(model: Mapping[str, Any]) -> None:
    """The options that select the architecture must select the Vosk Russian one."""
    for key, (required, what) in _MODEL_REQUIRED.items():
        # upstream defaults: use_transformer_flows False, transformer_flow_type
        # "mono_layer_post_residual", the iSTFT switches False
        default = {"use_transformer_flows": False, "transformer_flow_type": "mono_layer_post_residual",
                   "mb_istft_vits": False}.get(key, False)
        value = model.get(key, default)
        if value != required:
            raise VoskConfigError(
                f"Vosk config: model.{key}={value!r} is not supported: vitsq implements {what} "
                f"(model.{key}={required!r}), the architecture of the Vosk Russian models"
            )


def _speaker_and_istft(data: Mapping[str, Any], model: Mapping[str, Any]) -> dict[str, Any]:
    """Speaker and iSTFT fields, checked for consistency with each other."""
    n_speakers = _get(data, "data", "n_speakers", int, 0)
    gin_channels = _get(model, "model", "gin_channels", int, 0)
    n_layers = _get(model, "model", "n_layers", int)
    spk_enc = _get(model, "model", "use_spk_conditioned_encoder", bool, False)
    n_fft = _get(model, "model", "gen_istft_n_fft", int)
    hop = _get(model, "model", "gen_istft_hop_size", int)
    if n_fft % 2 or hop < 1 or hop > n_fft:
        raise VoskConfigError(
            f"Vosk config: model.gen_istft_n_fft={n_fft} must be even and model.gen_istft_hop_size={hop} in 1..{n_fft}"
        )
    if n_speakers > 1 and gin_channels < 1:
        raise VoskConfigError(f"Vosk config: data.n_speakers={n_speakers} needs model.gin_channels > 0")
    if spk_enc and gin_channels > 0 and n_layers <= 2:
        raise VoskConfigError(
            f"Vosk config: model.n_layers={n_layers}: the speaker-conditioned encoder adds the speaker at layer 2"
        )
    return dict(
        n_layers=n_layers,
        # upstream builds the speaker embedding only for n_speakers > 1
        n_speakers=max(n_speakers, 1),
        gin_channels=gin_channels,
        subbands=_get(model, "model", "subbands", int),
        istft_n_fft=n_fft,
        istft_hop=hop,
        # upstream builds the encoder's speaker projection whenever gin_channels > 0 (it is
        # only used when there is a speaker embedding, i.e. n_speakers > 1)
        use_spk_conditioned_encoder=bool(spk_enc and gin_channels > 0),
    )


def _network_fields(model: Mapping[str, Any]) -> dict[str, Any]:
    """Layer sizes of the text encoder, duration predictor and decoder."""
    return dict(
        inter_channels=_get(model, "model", "inter_channels", int),
        hidden_channels=_get(model, "model", "hidden_channels", int),
        filter_channels=_get(model, "model", "filter_channels", int),
        n_heads=_get(model, "model", "n_heads", int),
        kernel_size=_get(model, "model", "kernel_size", int),
        p_dropout=_get(model, "model", "p_dropout", float, 0.1),
        resblock=str(_get(model, "model", "resblock", str)),
        resblock_kernel_sizes=_int_tuple(model, "model", "resblock_kernel_sizes"),
        resblock_dilation_sizes=tuple(
            _int_tuple({f"resblock_dilation_sizes[{i}]": d}, "model", f"resblock_dilation_sizes[{i}]")
            for i, d in enumerate(_get(model, "model", "resblock_dilation_sizes", list))
        ),
        upsample_rates=_int_tuple(model, "model", "upsample_rates"),
        upsample_initial_channel=_get(model, "model", "upsample_initial_channel", int),
        upsample_kernel_sizes=_int_tuple(model, "model", "upsample_kernel_sizes"),
        use_sdp=_get(model, "model", "use_sdp", bool, True),
    )


def vosk_config_kwargs(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword arguments of :class:`~vitsq.models.config.VitsConfig` for a Vosk ``config.json``.

    Raises :class:`VoskConfigError` (a ``ValueError`` and a ``ModelLoadError``) naming the
    offending key for missing, mistyped, unknown or unsupported options.
    """
    from vitsq.text.russian import DEFAULT_PHONEME_ID_MAP

    data, model = _sections(cfg)
    _check_architecture(model)
    speaker_istft = _speaker_and_istft(data, model)
    kw: dict[str, Any] = dict(
        arch="vits2",
        decoder="mb_istft",
        flow_type="pre_conv2",
        n_vocab=N_SYMBOLS_RU,
        **_network_fields(model),
        **speaker_istft,
        n_flows=4,
        flow_wn_layers=4,
        flow_kernel_size=5,
        cond_layer_idx=2,
        sample_rate=_get(data, "data", "sampling_rate", int),
        hop_length=_get(data, "data", "hop_length", int),
        phoneme_type="vosk_ru",
        language="ru",
        phoneme_id_map=dict(DEFAULT_PHONEME_ID_MAP),
        add_blank=_get(data, "data", "add_blank", bool, True),
        noise_scale=DEFAULT_NOISE_SCALE,
        length_scale=DEFAULT_LENGTH_SCALE,
        noise_w=DEFAULT_NOISE_W,
    )
    if kw["resblock"] not in ("1", "2"):
        raise VoskConfigError(f"Vosk config: model.resblock={kw['resblock']!r}: valid values are \"1\" and \"2\"")
    return kw
