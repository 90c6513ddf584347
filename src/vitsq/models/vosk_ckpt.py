"""Load a vosk-tts training checkpoint (``G_*.pth``) into :class:`~vitsq.models.vits2.VITS2`.

Accepted layouts: ``{'model': state_dict, 'iteration': ..., ...}`` (what the upstream trainer
saves) or a bare state dict; weight norm stored as ``weight_g``/``weight_v`` (old
``torch.nn.utils.weight_norm``) or ``parametrizations.weight.original0/1`` (new
parametrization API). Weight norm is folded into plain weights. Training-only tensors are
dropped and reported (logged, and returned in :class:`LoadReport`):

* ``enc_q.*`` -- the posterior encoder;
* ``dp.post_*`` -- the stochastic duration predictor's posterior (training loss only);
* ``dp.flows.1.*`` -- the spline flow that upstream inference skips.

Everything else must match the model built from the config exactly: unexpected, missing or
mis-shaped tensors raise :class:`~vitsq.errors.ModelLoadError` naming the keys.
"""

from __future__ import annotations

import json
import logging
import math
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from vitsq.errors import ModelLoadError
from vitsq.models.config import VitsConfig
from vitsq.models.vits2 import VITS2

log = logging.getLogger(__name__)

# prefixes of training-only tensors that inference does not use
TRAINING_ONLY_PREFIXES = ("enc_q.", "dp.post_pre.", "dp.post_proj.", "dp.post_convs.", "dp.post_flows.",
                          "dp.flows.1.")
_WN_OLD = (".weight_g", ".weight_v")
_WN_NEW = (".parametrizations.weight.original0", ".parametrizations.weight.original1")
_MAX_LISTED = 8


@dataclass
class LoadReport:
    """What the loader did with the checkpoint's tensors."""

    path: str
    folded: list[str] = field(default_factory=list)  # weights whose weight norm was folded
    dropped: list[str] = field(default_factory=list)  # training-only keys not loaded
    loaded: int = 0  # tensors loaded into the model
    iteration: int | None = None

    def dropped_summary(self) -> dict[str, int]:
        """Dropped tensor counts by training-only prefix."""
        out: dict[str, int] = {}
        for k in self.dropped:
            p = next(p for p in TRAINING_ONLY_PREFIXES if k.startswith(p))
            out[p.rstrip(".")] = out.get(p.rstrip("."), 0) + 1
        return out


def _listing(keys: list[str]) -> str:
    keys = sorted(keys)
    more = f" ... and {len(keys) - _MAX_LISTED} more" if len(keys) > _MAX_LISTED else ""
    return ", ".join(keys[:_MAX_LISTED]) + more


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The state dict of a ``G_*.pth`` (wrapped or bare) and the other top-level entries."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ModelLoadError(
            f"{path}: refusing to unpickle non-tensor objects (only plain state dicts are loaded): {exc}"
        ) from exc
    except Exception as exc:  # zip/pickle errors of truncated or foreign files
        raise ModelLoadError(f"{path} is not a readable PyTorch checkpoint (truncated or corrupt?): {exc}") from exc
    meta: dict[str, Any] = {}
    if isinstance(obj, Mapping) and "model" in obj and isinstance(obj["model"], Mapping):
        meta = {k: v for k, v in obj.items() if k not in ("model", "optimizer")}
        obj = obj["model"]
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelLoadError(
            f"{path}: expected a state dict (name -> tensor) or {{'model': state_dict, ...}}, "
            f"got {type(obj).__name__}"
        )
    # DataParallel / DDP prefixes
    sd = {k[len("module."):] if k.startswith("module.") else k: v for k, v in obj.items()}
    return sd, meta


def fold_weight_norm(sd: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Replace every (g, v) weight-norm pair by ``weight = g * v / ||v||`` (norm over dims >= 1)."""
    out: dict[str, torch.Tensor] = {}
    folded: list[str] = []
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for k, v in sd.items():
        for g_suffix, v_suffix in (_WN_OLD, _WN_NEW):
            if k.endswith(g_suffix):
                pairs.setdefault(k[: -len(g_suffix)], {})["g"] = v
                break
            if k.endswith(v_suffix):
                pairs.setdefault(k[: -len(v_suffix)], {})["v"] = v
                break
        else:
            out[k] = v
    for base, gv in pairs.items():
        if set(gv) != {"g", "v"}:
            raise ModelLoadError(f"weight norm of {base}: found only the {'magnitude (g)' if 'g' in gv else 'direction (v)'}")
        g, v = gv["g"].float(), gv["v"].float()
        if g.dim() != v.dim() or g.shape[0] != v.shape[0] or g.numel() != v.shape[0]:
            raise ModelLoadError(f"weight norm of {base}: magnitude shape {tuple(g.shape)} does not fit direction {tuple(v.shape)}")
        norm = v.norm(dim=tuple(range(1, v.dim())), keepdim=True)  # [out, 1, 1]
        key = base + ".weight"
        if key in out:
            raise ModelLoadError(f"{key} is stored both plain and with weight norm")
        out[key] = v * (g / norm)
        folded.append(key)
    return out, folded


def _check_architecture(sd: Mapping[str, torch.Tensor], path: Path) -> None:
    keys = set(sd)
    if not any(k.startswith("enc_p.") for k in keys):
        hint = ""
        if any(k.startswith(("discriminators.", "disc")) for k in keys):
            hint = " (this looks like a discriminator checkpoint D_*.pth; load the generator G_*.pth)"
        elif any(k.startswith(("wd.", "dur_disc")) for k in keys):
            hint = " (this looks like a WavLM/duration discriminator checkpoint; load the generator G_*.pth)"
        raise ModelLoadError(f"{path}: not a VITS generator checkpoint: no enc_p.* text-encoder weights{hint}")
    if any(k.startswith("dec.conv_post.") for k in keys) or not any(k.startswith("dec.subband_conv_post.") for k in keys):
        dec = "a HiFi-GAN decoder (dec.conv_post)" if any(k.startswith("dec.conv_post.") for k in keys) else \
            "no multi-band iSTFT decoder (dec.subband_conv_post)"
        raise ModelLoadError(
            f"{path}: checkpoint of another architecture: it has {dec}; vitsq loads Vosk MB-iSTFT-VITS2 "
            "generators (for Piper voices load the .onnx file)"
        )
    if not any(".pre_transformer." in k for k in keys if k.startswith("flow.")):
        raise ModelLoadError(
            f"{path}: checkpoint of another architecture: its flow has no pre_transformer "
            "(not transformer_flow_type 'pre_conv2')"
        )


def _mismatch_hint(key: str, want: tuple[int, ...], got: tuple[int, ...], config: VitsConfig) -> str:
    if key == "emb_g.weight":
        return f" (config n_speakers={config.n_speakers}, gin_channels={config.gin_channels}; checkpoint has {got[0]} speakers x {got[1]})"
    if key == "enc_p.emb.weight":
        return f" (config n_vocab={config.n_vocab}; checkpoint has {got[0]} symbols)"
    return ""


def load_state_dict_strict(model: VITS2, sd: Mapping[str, torch.Tensor], path: str | Path) -> LoadReport:
    """Fold, drop training-only keys, check names/shapes strictly, load. Returns the report."""
    path = Path(path)
    _check_architecture(sd, path)
    folded_sd, folded = fold_weight_norm(sd)
    report = LoadReport(path=str(path), folded=sorted(folded))
    kept: dict[str, torch.Tensor] = {}
    for k, v in folded_sd.items():
        if k.startswith(TRAINING_ONLY_PREFIXES):
            report.dropped.append(k)
        else:
            kept[k] = v
    expected = model.state_dict()
    missing = [k for k in expected if k not in kept]
    unexpected = [k for k in kept if k not in expected]
    # keys whose mismatch says which config value is wrong come first
    order = sorted(kept, key=lambda k: (k not in ("emb_g.weight", "enc_p.emb.weight"), k))
    bad_shapes = [
        f"{k}: model {tuple(expected[k].shape)} vs checkpoint {tuple(kept[k].shape)}"
        + _mismatch_hint(k, tuple(expected[k].shape), tuple(kept[k].shape), model.config)
        for k in order if k in expected and kept[k].shape != expected[k].shape
    ]
    problems = []
    if bad_shapes:
        problems.append(f"{len(bad_shapes)} shape mismatches: " + "; ".join(bad_shapes[:_MAX_LISTED]))
    if missing:
        problems.append(f"{len(missing)} missing keys: {_listing(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys: {_listing(unexpected)}")
    if problems:
        raise ModelLoadError(f"{path} does not match its config ({model.config.source or 'given config'}): "
                             + " | ".join(problems))
    dtype = next(iter(expected.values())).dtype
    model.load_state_dict({k: v.to(dtype) for k, v in kept.items()}, strict=True)
    report.loaded = len(kept)
    summary = ", ".join(f"{n} {p}" for p, n in report.dropped_summary().items()) or "nothing"
    log.info("%s: loaded %d tensors (%d weight-norm folded); dropped training-only tensors: %s",
             path.name, report.loaded, len(report.folded), summary)
    return report


def find_config(checkpoint: str | Path, config: str | Path | None = None) -> Path:
    """The ``config.json`` for a checkpoint: ``config`` if given, else the one beside it."""
    checkpoint = Path(checkpoint)
    cand = Path(config) if config is not None else checkpoint.parent / "config.json"
    if not cand.is_file():
        where = "given" if config is not None else f"beside {checkpoint.name}"
        raise ModelLoadError(
            f"Vosk config not found: {cand} ({where}); pass the training config.json with --config"
        )
    return cand


def read_vosk_config(path: str | Path, source: str = "") -> VitsConfig:
    """Parse a vosk-tts training ``config.json`` into :class:`VitsConfig` (ModelLoadError if bad)."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"cannot read Vosk config {path}: {exc}") from exc
    if not isinstance(raw, dict) or "model" not in raw or "data" not in raw:
        raise ModelLoadError(f"{path}: not a vosk-tts training config (needs 'data' and 'model' sections)")
    try:
        return VitsConfig.from_vosk_json(raw, source=source or str(path))
    except ModelLoadError:
        raise
    except ValueError as exc:
        raise ModelLoadError(f"{path}: {exc}") from exc


def load_vosk_checkpoint(
    checkpoint: str | Path, config: str | Path | VitsConfig | None = None
) -> tuple[VITS2, LoadReport]:
    """Build :class:`VITS2` from ``config`` (default: ``config.json`` beside the checkpoint) and
    load ``checkpoint`` into it. Returns the model in eval mode and the :class:`LoadReport`."""
    checkpoint = Path(checkpoint)
    if isinstance(config, VitsConfig):
        cfg = config
    else:
        cfg = read_vosk_config(find_config(checkpoint, config), source=str(checkpoint))
    sd, meta = read_checkpoint(checkpoint)
    model = VITS2(cfg)
    report = load_state_dict_strict(model, sd, checkpoint)
    it = meta.get("iteration")
    report.iteration = int(it) if isinstance(it, (int, float)) else None
    return model.eval(), report


# --------------------------------------------------------------------------- synthesizers
PRESET_NAME = "vosk-ru-multi"
PRESET_SEED = 1234
PRESET_CONFIG = "vosk_ru_multi_config.json"  # upstream configs/mb_istft_vits2_multi.json
RANDOM_FRAMES_PER_TOKEN = 1.8  # before ceil(); about 3 frames per token after it


def preset_config() -> VitsConfig:
    """The full Vosk Russian multi-speaker config shipped with vitsq (package data)."""
    from importlib.resources import files

    raw = json.loads(files("vitsq").joinpath("data", PRESET_CONFIG).read_text(encoding="utf-8"))
    return VitsConfig.from_vosk_json(raw, source=f"preset:{PRESET_NAME}")


def random_vosk_model(config: VitsConfig, seed: int = PRESET_SEED) -> VITS2:
    """VITS2 with seeded random weights (global RNG untouched): for speed/size work only.

    Decoder convolutions get upstream's N(0, 0.01) initialisation, so the random model's audio
    stays in a normal range (it is not speech). The duration predictor's output offset
    (``RANDOM_FRAMES_PER_TOKEN`` before rounding up) makes tokens last about 3 frames, the rate
    of trained Vosk voices (~30 tokens/s with blanks at ~86 frames/s); otherwise random weights give ~1 frame per
    token and speed numbers would under-weight the decoder.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = VITS2(config)
        for name, mod in model.dec.named_modules():
            if isinstance(mod, (torch.nn.Conv1d, torch.nn.ConvTranspose1d)):
                torch.nn.init.normal_(mod.weight, 0.0, 0.01)
        if config.use_sdp:
            with torch.no_grad():
                # generation inverts y = m + exp(logs) x, so logw = x - m: m = -log(frames)
                model.dp.flows[0].m[0] = -math.log(RANDOM_FRAMES_PER_TOKEN)
    return model.eval()


def _parameter_notes(model: VITS2) -> dict[str, str]:
    from vitsq.models.vits2 import parameter_report

    r = parameter_report(model)
    return {
        "note_parameters": (
            f"inference model {r['inference_total'] / 1e6:.2f} M; as upstream counts it "
            f"{r['upstream_without_enc_q'] / 1e6:.2f} M without the posterior encoder (adds weight-norm "
            f"magnitudes, the duration posterior and the skipped duration flow, unused at inference) "
            f"and {r['upstream_total'] / 1e6:.2f} M with it"
        ),
    }


def _torch_only(backend: str, what: str) -> None:
    from vitsq.errors import UnsupportedError

    if backend != "torch":
        raise UnsupportedError(
            f"{what} runs on the torch backend, not {backend!r}: export it first "
            "(`vitsq export ... --format onnx|executorch`) and load the exported artifact"
        )


def load_preset(backend: str = "torch", device: str = "cpu"):
    """The ``vosk-ru-multi`` preset: full config, seeded random weights, labelled untrained."""
    from vitsq.backends.torch import TorchSynthesizer
    from vitsq.synth import UNTRAINED
    from vitsq.text.russian import RussianFrontend

    _torch_only(backend, f"the {PRESET_NAME} preset")
    cfg = preset_config()
    model = random_vosk_model(cfg)
    info = {"source": f"upstream config mb_istft_vits2_multi.json, seed {PRESET_SEED}", **_parameter_notes(model)}
    return TorchSynthesizer(model, PRESET_NAME, RussianFrontend(cfg), device=device, label=UNTRAINED,
                            extra_info=info)


def load_checkpoint_synthesizer(path: str | Path, backend: str = "torch", device: str = "cpu",
                                config_path: str | Path | None = None, dictionary: str | Path | None = None):
    """A ``G_*.pth`` behind the Synthesizer interface (torch backend).

    ``config_path``: the training ``config.json`` (default: beside the checkpoint);
    ``dictionary``: a Vosk pronunciation dictionary for the front-end (default: rules only).
    """
    from vitsq.backends.torch import TorchSynthesizer
    from vitsq.text.russian import RussianFrontend

    _torch_only(backend, "a Vosk checkpoint")
    path = Path(path)
    model, report = load_vosk_checkpoint(path, config_path)
    info = {"source": str(path), "iteration": report.iteration,
            "dropped_training_only": report.dropped_summary(), **_parameter_notes(model)}
    return TorchSynthesizer(model, path.stem, RussianFrontend(model.config, dictionary), device=device,
                            label="trained", artifact_paths=[path], extra_info=info)
