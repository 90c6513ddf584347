"""Load a Piper voice (``.onnx`` + ``.onnx.json``) into our PyTorch :class:`VITS`.

Piper's exporter folds weight norm and renames some weights (``onnx::Conv_8168``), constant-
folds others (``/dp/flows.0/Exp_output_0`` = exp(-logs)) and even gives the symbol embedding
the name of a graph input. Names are therefore resolved through the graph: an initializer that
is not a parameter name is identified by the node that consumes it (``/flow/flows.0/enc/
in_layers.0/Conv`` input 1 -> ``flow.flows.0.enc.in_layers.0.weight``). Every float tensor of
the file must land in exactly one parameter, and every parameter must be filled.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import torch

from vitsq.errors import ModelLoadError
from vitsq.models.config import VitsConfig
from vitsq.models.vits import VITS

log = logging.getLogger(__name__)

# Initializers that are exporter constants (shapes, indices, scalars), not weights.
_MAX_CONSTANT_NUMEL = 8


def _load_onnx(path: Path):
    import onnx

    if not path.is_file():
        raise ModelLoadError(f"voice file not found: {path}")
    try:
        return onnx.load(str(path))
    except Exception as exc:  # protobuf raises several types for truncated files
        raise ModelLoadError(f"{path} is not a readable ONNX model (truncated or corrupt?): {exc}") from exc


def read_piper_config(onnx_path: Path, config_path: Path | None = None) -> tuple[VitsConfig, dict]:
    """Read the voice JSON beside ``onnx_path`` (``voice.onnx.json``) or at ``config_path``."""
    config_path = Path(config_path) if config_path else Path(str(onnx_path) + ".json")
    if not config_path.is_file():
        raise ModelLoadError(f"voice config not found: {config_path} (Piper voices need <voice>.onnx.json beside the .onnx)")
    try:
        raw = json.loads(config_path.read_text(encoding="utf-8"))
        return VitsConfig.from_piper_json(raw, source=str(onnx_path)), raw
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"{config_path} is not valid JSON: {exc}") from exc
    except ValueError as exc:
        raise ModelLoadError(f"{config_path}: {exc}") from exc


def _module_path(node_name: str) -> str:
    """``/flow/flows.0/enc/in_layers.0/Conv`` -> ``flow.flows.0.enc.in_layers.0``."""
    parts = [p for p in node_name.split("/") if p]
    return ".".join(parts[:-1])


def _resolve_names(model) -> tuple[dict[str, np.ndarray], list[str]]:
    """Map every weight initializer to a parameter name; returns (params, constants)."""
    from onnx import numpy_helper

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    consumers: dict[str, list[tuple[object, int]]] = {}
    for node in graph.node:
        for k, name in enumerate(node.input):
            if name in inits:
                consumers.setdefault(name, []).append((node, k))

    params: dict[str, np.ndarray] = {}
    constants: list[str] = []

    def put(key: str, value: np.ndarray, source: str) -> None:
        if key in params:
            raise ModelLoadError(f"two initializers map to parameter {key} (second: {source})")
        params[key] = value

    for name, tensor in inits.items():
        value = numpy_helper.to_array(tensor)
        if re.fullmatch(r"(enc_p|dec|flow|dp|emb_g)\..+", name):
            put(name, value, name)
            continue
        m = re.fullmatch(r"/(.+)/Exp_output_0", name)
        if m and m.group(1).startswith("dp/flows."):
            # constant-folded exp(-logs) of the duration predictor's ElementwiseAffine
            put(m.group(1).replace("/", ".") + ".logs", -np.log(value), name)
            continue
        resolved = None
        for node, k in consumers.get(name, []):
            path = _module_path(node.name)
            if node.op_type in ("Conv", "ConvTranspose") and k in (1, 2) and path:
                resolved = f"{path}.{'weight' if k == 1 else 'bias'}"
            elif node.op_type == "Gather" and k == 0 and path:
                resolved = f"{path}.weight"  # embedding table
            if resolved:
                break
        if resolved:
            put(resolved, value, name)
        elif value.dtype.kind == "f" and value.size > _MAX_CONSTANT_NUMEL:
            users = ", ".join(f"{n.op_type} {n.name}" for n, _ in consumers.get(name, [])) or "no node"
            raise ModelLoadError(f"ONNX initializer {name!r} {list(value.shape)} (used by {users}) maps to no model parameter")
        else:
            constants.append(name)
    return params, constants


def infer_config(config: VitsConfig, params: dict[str, np.ndarray]) -> VitsConfig:
    """Confirm/override architecture hyper-parameters from the weights themselves.

    The Piper JSON only names a quality level; the weights are the ground truth. We read
    channel sizes, layer counts, kernel sizes, resblock type and speaker table from them.
    """

    def shape(key: str) -> tuple[int, ...]:
        if key not in params:
            raise ModelLoadError(f"voice weights lack {key}: not a Piper VITS model?")
        return tuple(params[key].shape)

    n_vocab, hidden = shape("enc_p.emb.weight")
    inter = shape("enc_p.proj.weight")[0] // 2
    filter_ch, _, ksize = shape("enc_p.encoder.ffn_layers.0.conv_1.weight")
    n_layers = len({k.split(".")[3] for k in params if k.startswith("enc_p.encoder.attn_layers.")})
    n_heads = config.n_heads
    ups = sorted(int(k.split(".")[2]) for k in params if re.fullmatch(r"dec\.ups\.\d+\.weight", k))
    up_kernels = tuple(shape(f"dec.ups.{i}.weight")[2] for i in ups)
    upsample_initial = shape("dec.conv_pre.weight")[0]
    # ConvTranspose1d(k, stride=u, padding=(k-u)//2): Piper uses k = 2u except the last (k = 2u)
    # -> read the strides from the ONNX node attributes instead of guessing (see _strides).
    n_res = len({k.split(".")[2] for k in params if k.startswith("dec.resblocks.")}) // max(len(ups), 1)
    rb1 = any(".convs1." in k for k in params if k.startswith("dec.resblocks."))
    res_kernels = tuple(shape(f"dec.resblocks.{j}.{'convs1' if rb1 else 'convs'}.0.weight")[2] for j in range(n_res))
    n_speakers, gin = (shape("emb_g.weight") if "emb_g.weight" in params else (1, 0))
    use_sdp = any(k.startswith("dp.flows.") for k in params)
    # The JSON's own claims about the interface must agree with the weights.
    if config.n_speakers != n_speakers:
        raise ModelLoadError(f"config says num_speakers={config.n_speakers} but the weights have "
                             f"{'a speaker table of ' + str(n_speakers) if n_speakers > 1 else 'no speaker table'}")
    if config.n_vocab != n_vocab:
        raise ModelLoadError(f"config says num_symbols={config.n_vocab} but the symbol embedding has {n_vocab} rows")
    return config.replace(
        n_vocab=n_vocab, hidden_channels=hidden, inter_channels=inter, filter_channels=filter_ch,
        kernel_size=ksize, n_layers=n_layers, n_heads=n_heads,
        upsample_initial_channel=upsample_initial, upsample_kernel_sizes=up_kernels,
        resblock="1" if rb1 else "2", resblock_kernel_sizes=res_kernels,
        n_speakers=n_speakers, gin_channels=gin, use_sdp=use_sdp,
    )


def _strides(model) -> tuple[int, ...]:
    strides = []
    for node in model.graph.node:
        if node.op_type == "ConvTranspose" and node.name.startswith("/dec/ups"):
            for a in node.attribute:
                if a.name == "strides":
                    strides.append(int(a.ints[0]))
    return tuple(strides)


def load_piper_voice(onnx_path: str | Path, config_path: str | Path | None = None) -> VITS:
    """Build a :class:`VITS` from a Piper voice and load every weight strictly."""
    onnx_path = Path(onnx_path)
    config, _ = read_piper_config(onnx_path, Path(config_path) if config_path else None)
    model_proto = _load_onnx(onnx_path)
    params, constants = _resolve_names(model_proto)
    try:
        config = infer_config(config, params)
        strides = _strides(model_proto)
        if strides:
            config = config.replace(upsample_rates=strides)
        model = VITS(config)
    except ValueError as exc:
        raise ModelLoadError(f"{onnx_path}: weights do not form a valid VITS: {exc}") from exc
    log.debug("ignored %d exporter constants: %s", len(constants), constants)
    state = model.state_dict()
    missing = sorted(set(state) - set(params))
    unexpected = sorted(set(params) - set(state))
    if missing or unexpected:
        raise ModelLoadError(
            f"{onnx_path} does not match its config: missing parameters {missing[:8]}{'...' if len(missing) > 8 else ''}; "
            f"unexpected weights {unexpected[:8]}{'...' if len(unexpected) > 8 else ''}"
        )
    for key, value in params.items():
        if tuple(state[key].shape) != tuple(value.shape):
            raise ModelLoadError(
                f"{onnx_path}: shape mismatch for {key}: file has {list(value.shape)}, config expects {list(state[key].shape)}"
            )
    model.load_state_dict({k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in params.items()}, strict=True)
    model.eval()
    return model
