"""Versioned quantization recipes and the measured presets (:func:`best_for`): plain data.

A recipe is a frozen dataclass: it is saved (``to_dict``) into every artifact's ``vitsq.json``
and read back (``recipe_from_dict``) so that an artifact says exactly how it was made. Bump a
recipe's ``VERSION`` whenever what it produces changes; old versions are refused by name.

* :class:`EagerRecipe` -- ``torch.ao`` static INT8, QuantStub/DeQuantStub around every
  Conv1d/ConvTranspose1d/Linear (float tensors between layers), observer and engine selectable.
* :class:`PT2ERecipe` -- ``torch.export`` + XNNPACK quantizer on the static-shape stages;
  consumed by the ExecuTorch export.
* :class:`OrtStaticRecipe` / :class:`OrtDynamicRecipe` -- ONNX Runtime QDQ static / dynamic
  quantization of the exported ONNX (implemented in :mod:`vitsq.quantize.ort`).

This module imports no implementation; :func:`vitsq.quantize.dispatch.quantize` (``vitsq.quantize``)
runs a recipe.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from vitsq.errors import InputError, UnsupportedError

#: torch.ao quantized CPU engines (:mod:`vitsq.quantize.engines` probes which work here).
ENGINES = ("fbgemm", "x86", "qnnpack", "onednn")
OBSERVERS = ("histogram", "minmax", "moving_average")
ORT_CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
PT2E_STAGES = ("encoder", "duration", "flow", "decoder")


def _check_choice(what: str, value: Any, valid: tuple) -> None:
    if value not in valid:
        raise UnsupportedError(f"unknown {what} {value!r}: valid choices are {', '.join(map(str, valid))}")


class _Recipe:
    """Shared (de)serialization; subclasses are frozen dataclasses with a ``version`` field."""

    name: ClassVar[str]
    VERSION: ClassVar[int] = 1

    def __post_init__(self) -> None:
        if self.version != self.VERSION:  # type: ignore[attr-defined]
            raise UnsupportedError(f"{self.name} recipe version {self.version!r} is not supported "  # type: ignore[attr-defined]
                                   f"(this vitsq makes version {self.VERSION}): re-quantize the model")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with the recipe name, e.g. ``{"recipe": "eager", "version": 1, ...}``."""
        d = {"recipe": self.name}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            v = getattr(self, f.name)
            d[f.name] = list(v) if isinstance(v, tuple) else v
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        """Inverse of :meth:`to_dict`; unknown keys are an error naming the valid ones."""
        d = dict(d)
        name = d.pop("recipe", cls.name)
        if name != cls.name:
            raise InputError(f"recipe dict is for {name!r}, not {cls.name!r}")
        names = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(d) - set(names))
        if unknown:
            raise InputError(f"unknown {cls.name} recipe option(s) {unknown}: valid options are {', '.join(names)}")
        for k, v in list(d.items()):
            if isinstance(v, list):
                d[k] = tuple(v)
        return cls(**d)

    def replace(self, **changes: Any):
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


@dataclass(frozen=True)
class EagerRecipe(_Recipe):
    """The seed's method done right: torch.ao eager static INT8 with per-layer stubs.

    ``per_channel``: per-output-channel symmetric INT8 weights for Conv1d/Linear; ConvTranspose1d
    stays per-tensor, since torch.ao has no per-channel ConvTranspose (the coverage report shows
    each layer's scheme). ``act_observer``: how activation ranges are collected during
    calibration. ``engine``: quantized CPU engine (``None`` = ``fbgemm`` on x86-64, ``qnnpack``
    on ARM); stored in the artifact and enforced at load, because packed weights are
    engine-specific. ``keep_float``: layer names, module prefixes (``dec.ups``) or sensitivity
    group names (``flow``, ``dec.stage0``) to leave in float.
    """

    name: ClassVar[str] = "eager"
    VERSION: ClassVar[int] = 1
    version: int = 1
    per_channel: bool = False
    act_observer: str = "histogram"
    engine: str | None = None
    keep_float: tuple[str, ...] = ()
    #: 7-bit activations (``True``) or 8-bit (``False``); ``None`` = measured on this CPU by
    #: :func:`vitsq.quantize.engines.reduce_range` (8-bit unless the engine's kernels saturate).
    #: Artifacts store the resolved value.
    reduce_range: bool | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_choice("activation observer", self.act_observer, OBSERVERS)
        if self.engine is not None:
            _check_choice("quantized engine", self.engine, ENGINES)
        if isinstance(self.keep_float, str):
            raise InputError("keep_float takes a tuple of layer/group names, not a string")
        object.__setattr__(self, "keep_float", tuple(self.keep_float))


@dataclass(frozen=True)
class PT2ERecipe(_Recipe):
    """torch.export + XNNPACK quantizer (per-channel symmetric weights, static activations).

    Only the stages with static shapes are exported and quantized (``stages``, a subset of
    ``encoder``, ``duration``, ``flow``, ``decoder``; the token/frame axis is dynamic); the
    rounding of durations and the data-dependent expansion stay float eager code, as does every
    stage left out. ``None`` = the stages of the architecture's default preset variant
    (:func:`best_for`: flow and decoder for VITS, whose ``faithful`` preset keeps the duration
    path float; VITS2's ``fast`` preset adds the text encoder). See :mod:`vitsq.quantize.pt2e`.

    ``keep_float``: layer names, module prefixes or sensitivity group names (as for
    :class:`EagerRecipe`: ``dec.stage2``, ``dec.conv_post``, ``flow``) whose nodes are left
    unannotated, hence float; a decoder stage group also keeps float the decoder's own ops after
    it (the sums/averages of its residual blocks, the activations feeding the next layer).
    ``None`` = the presets' choice for the quantized stages (:func:`pt2e_keep_float`);
    artifacts store the resolved value.
    ``quantize_adds``: let the quantizer put INT8 activations on ``add``/``div`` (residual sums);
    off by default, since on joe they cost log-mel L1 0.48 -> 0.30 with the tail float.
    """

    name: ClassVar[str] = "pt2e"
    VERSION: ClassVar[int] = 2
    version: int = 2
    per_channel: bool = True
    stages: tuple[str, ...] | None = None
    keep_float: tuple[str, ...] | None = None
    quantize_adds: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        for field in ("stages", "keep_float"):
            value = getattr(self, field)
            if isinstance(value, str):
                raise InputError(f"{field} takes a tuple of names, not a string: {value!r}")
            if value is not None:
                object.__setattr__(self, field, tuple(value))
        if self.stages is not None:
            if not self.stages:
                raise InputError(f"pt2e recipe needs at least one stage: choose from {', '.join(PT2E_STAGES)}")
            for s in self.stages:
                _check_choice("pt2e stage", s, PT2E_STAGES)


@dataclass(frozen=True)
class OrtStaticRecipe(_Recipe):
    """ONNX Runtime ``quantize_static`` (QDQ) on our exported ONNX, fed real model inputs.

    ``op_types``: ONNX op types to quantize (``None`` = decided by measuring, see
    :mod:`vitsq.quantize.ort`). ``keep_float``: ONNX node name prefixes to leave in float.
    ``static_prefixes``: node name prefixes quantized statically (``None`` = the ort module's
    measured default, the decoder); ``weight_only_rest``: INT8 weights (float activations)
    everywhere else. ``polyphase_upsampling``: export the decoder's transposed convolutions as
    ordinary convolutions (:mod:`vitsq.models.polyphase`, same function) so that they run as
    INT8 ``QLinearConv`` -- ONNX Runtime's CPU provider has no INT8 ``ConvTranspose``.
    ``float_convs_2d``: the decoder's float convolutions (those inside float islands) run as 2-D
    convolutions, which ONNX Runtime's NCHWc kernels compute faster than its 1-D path (same
    values up to summation order; :func:`vitsq.quantize.ort.float_convs_as_2d`).
    ``float_tail_4d``: the decoder's float tail (nothing INT8 after it) stays in ONNX Runtime's
    blocked layout from end to end (:func:`vitsq.quantize.ort.float_tail_as_4d`).
    ``text_encoder_convs_2d``: a float text encoder's convolutions run as 2-D too.
    ``float_reads_float``: ops left float read float tensors, not their INT8 copies
    (:func:`vitsq.quantize.ort.float_paths_read_float`; the flow's pass-through halves).
    Version 2 added ``polyphase_upsampling``, version 3 ``float_convs_2d``, version 4
    ``float_tail_4d``, ``text_encoder_convs_2d`` and ``float_reads_float``; older recipes (made
    without them) read as ``False``.
    """

    name: ClassVar[str] = "ort-static"
    VERSION: ClassVar[int] = 4
    version: int = 4
    per_channel: bool = True
    calibrate_method: str = "minmax"
    op_types: tuple[str, ...] | None = None
    keep_float: tuple[str, ...] = ()
    static_prefixes: tuple[str, ...] | None = None
    weight_only_rest: bool = True
    polyphase_upsampling: bool = True
    float_convs_2d: bool = True
    float_tail_4d: bool = True
    text_encoder_convs_2d: bool = True
    float_reads_float: bool = True

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        if isinstance(d, dict) and d.get("version") in (1, 2, 3):  # made before the options of later versions
            old = d["version"]
            d = {**d, "version": 4, "float_tail_4d": False, "text_encoder_convs_2d": False, "float_reads_float": False}
            if old < 3:
                d["float_convs_2d"] = False
            d.setdefault("polyphase_upsampling", False)  # v1
        return super().from_dict(d)

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_choice("ONNX Runtime calibration method", self.calibrate_method, ORT_CALIBRATION_METHODS)
        for name in ("op_types", "static_prefixes"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, tuple(getattr(self, name)))
        object.__setattr__(self, "keep_float", tuple(self.keep_float))


@dataclass(frozen=True)
class OrtDynamicRecipe(_Recipe):
    """ONNX Runtime ``quantize_dynamic`` (INT8 weights, activations quantized on the fly)."""

    name: ClassVar[str] = "ort-dynamic"
    VERSION: ClassVar[int] = 1
    version: int = 1
    per_channel: bool = False
    op_types: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.op_types is not None:
            object.__setattr__(self, "op_types", tuple(self.op_types))


RECIPES: dict[str, type] = {r.name: r for r in (EagerRecipe, PT2ERecipe, OrtStaticRecipe, OrtDynamicRecipe)}


def recipe_from_dict(d: dict[str, Any]):
    """Rebuild a recipe from its ``to_dict`` form (as stored in ``vitsq.json``)."""
    if not isinstance(d, dict) or "recipe" not in d:
        raise InputError(f"not a recipe dict (no 'recipe' key): {d!r}")
    return recipe_class(d["recipe"]).from_dict(d)


def recipe_class(name: str) -> type:
    """The recipe class for a name (``eager``, ``pt2e``, ``ort-static``, ``ort-dynamic``; a preset
    variant may follow, ``ort-static:fast``, ``pt2e:fast``, see :func:`best_for`)."""
    if isinstance(name, str) and ":" in name:
        name, variant = name.split(":", 1)
        _check_variant(name, variant)
    if name not in RECIPES:
        raise UnsupportedError(f"unknown quantization recipe {name!r}: valid recipes are {', '.join(RECIPES)}")
    return RECIPES[name]


def _check_variant(recipe: str, variant: str) -> None:
    """Refuse a preset variant that ``recipe`` does not have, naming those it has."""
    if recipe in PRESET_VARIANTS:
        _check_choice(f"{recipe} preset variant", variant, PRESET_VARIANTS[recipe])
    elif recipe in RECIPES:
        with_variants = " and ".join(PRESET_VARIANTS)
        raise UnsupportedError(f"recipe {recipe!r} has no preset variants (got {variant!r}); {with_variants} "
                               f"have: {', '.join(ORT_STATIC_VARIANTS)}")


# ============================================================================ presets
#: Eager layer groups that stay float in the preset (:func:`best_for`): the last decoder stage and
#: ``conv_post`` (8-bit activations at waveform level put a noise floor under quiet frames) and the
#: duration predictor (INT8 there shifts integer durations). Why: docs/quantization.md.
EAGER_KEEP_FLOAT: tuple[str, ...] = ("dp", "dec.stage2", "dec.conv_post")
#: Where the VITS ort-static ``fast`` preset runs static INT8 (decoder, flow, text encoder; the rest
#: is weight-only INT8). Chosen one step at a time on joe by speaker similarity and speed.
ORT_STATIC_PREFIXES_VITS: tuple[str, ...] = ("/dec/", "/flow/", "/enc_p/")
#: ... and for the VITS2 (Vosk) preset and the ``faithful`` presets: decoder and flow.
ORT_STATIC_PREFIXES_VITS2: tuple[str, ...] = ("/dec/", "/flow/")
ORT_STATIC_PREFIXES_FAITHFUL: tuple[str, ...] = ("/dec/", "/flow/")
#: The text encoder and the duration predictor, kept entirely float (FP32 weights too) by the
#: ``faithful`` presets: any change there moves integer durations (on joe, weight-only INT8 of
#: the duration predictor alone changed the durations of 40 of 40 sentences).
ORT_DURATION_PATH: tuple[str, ...] = ("/enc_p/", "/dp/")
#: The MB-iSTFT decoder's waveform end, kept float by the VITS2 ort-static presets: the
#: ``subband_conv_post`` output is log-magnitude (``exp`` turns 8-bit steps into ~2 % amplitude
#: steps) and phase, and the PQMF synthesis filter's input and output are the sub-band and full-band
#: waveforms (8 bits there is a 48 dB noise floor). Both are a few percent of the decoder's MACs.
ORT_VITS2_TAIL: tuple[str, ...] = ("/dec/subband_conv_post/", "/dec/pqmf/")
#: Preset variants of the ort-static and pt2e recipes (:func:`best_for`): ``faithful`` keeps the
#: duration path (text encoder and duration predictor) float, so integer durations equal FP32's, and
#: for ort-static also the decoder's whole full-rate stage; ``fast`` trades them for speed and size.
#: Measured: docs/quantization.md ("Faithful preset").
ORT_STATIC_VARIANTS: tuple[str, ...] = ("faithful", "fast")
#: The recipes that have preset variants, and theirs.
PRESET_VARIANTS: dict[str, tuple[str, ...]] = {"ort-static": ORT_STATIC_VARIANTS, "pt2e": ORT_STATIC_VARIANTS}
#: The variant a plain recipe name means, per architecture: VITS voices measured on joe (faithful);
#: the VITS2 (Vosk) default stays size-first (no trained checkpoint here to measure its quality, and
#: a float text encoder would add ~20 MB), ``ort-static:faithful`` / ``pt2e:faithful`` ask for the other.
DEFAULT_VARIANT: dict[str, str] = {"vits": "faithful", "vits2": "fast"}


def _decoder_shape(config: Any) -> tuple[int, int]:
    """(upsampling stages, resblocks per stage) of a VITS HiFi-GAN decoder config."""
    if not hasattr(config, "upsample_rates"):
        raise InputError("the ort-static preset for VITS is derived from the model's decoder: pass the model "
                         f"or its config, not {type(config).__name__}")
    return len(config.upsample_rates), len(config.resblock_kernel_sizes)


def dec_op_name(op: str, i: int) -> str:
    """``torch.onnx``'s name of the decoder's ``i``-th top-level ``op`` (``/dec/Add``, ``/dec/Add_1``, ...)."""
    return f"/dec/{op}" if i == 0 else f"/dec/{op}_{i}"


def ort_keep_float(config: Any) -> tuple[str, ...]:
    """ONNX node-name prefixes the VITS ort-static preset keeps float, derived from ``config``.

    The last upsampling stage's residual sums (inside its resblocks and between them), its last
    resblock, the activation before ``conv_post`` and ``conv_post`` (see the measurements above).
    Names follow ``torch.onnx`` numbering of the decoder's top-level ops (``/dec/Add_4``: the
    fifth ``Add`` in ``dec``), one LeakyRelu and ``num_kernels - 1`` Adds and a Div per stage.
    """
    n, k = _decoder_shape(config)
    last = n - 1
    keep = ["/dec/conv_post/", dec_op_name("LeakyRelu", n)]
    keep += [dec_op_name("Add", last * (k - 1) + j) for j in range(k - 1)] + [dec_op_name("Div", last)]
    blocks = range(last * k, last * k + k)
    keep += [f"/dec/resblocks.{b}/Add" for b in blocks[:-1]] + [f"/dec/resblocks.{blocks[-1]}/"]
    return tuple(keep)


def ort_last_stage(config: Any) -> tuple[str, ...]:
    """ONNX node-name prefixes of the VITS decoder's whole last (full-rate) stage, derived from
    ``config``: the activation before its upsampling layer, the upsampling layer, every resblock
    of the stage, the sums and average across them, the last activation and ``conv_post``. The
    ``faithful`` preset keeps them float: INT8 anywhere in this stage costs speaker similarity
    (joe: 0.982 with it float, 0.979 with only its upsampling INT8, 0.965 with its first two
    resblocks INT8 too; docs/quantization.md)."""
    n, k = _decoder_shape(config)
    last = n - 1
    keep = ["/dec/conv_post/", dec_op_name("LeakyRelu", n), dec_op_name("LeakyRelu", last), f"/dec/ups.{last}/",
            dec_op_name("Div", last)]
    keep += [dec_op_name("Add", last * (k - 1) + j) for j in range(k - 1)]
    keep += [f"/dec/resblocks.{b}/" for b in range(last * k, last * k + k)]
    return tuple(keep)


#: PT2E groups left float in VITS by default (:class:`PT2ERecipe` ``keep_float=None``): the
#: decoder's part of :data:`EAGER_KEEP_FLOAT`, plus ``dp.flows`` (the spline flows that turn noise
#: into log-durations: INT8 there moved durations more than the rest of the duration predictor).
PT2E_KEEP_FLOAT: tuple[str, ...] = tuple(g for g in EAGER_KEEP_FLOAT if g.startswith("dec.")) + ("dp.flows",)


def best_for(model: Any = None, recipe: str = "eager", variant: str | None = None):
    """The measured best recipe of kind ``recipe`` (``eager``, ``ort-static``, ``pt2e``,
    ``ort-dynamic``) for ``model``: what a recipe *name* means everywhere (``vitsq.quantize(model,
    "ort-static")``, ``vitsq quantize --recipe``, ``vitsq export --recipe``, the demo).

    ``model`` (a synthesizer, module or config; optional) picks architecture-specific float
    layers: the HiFi-GAN VITS decoder's last stage and ``conv_post`` for Piper/VITS voices; for
    the multi-band iSTFT VITS2 decoder only the duration predictor is kept float, since its
    last-stage equivalents were not measured on trained weights. Why: docs/quantization.md.

    ``variant`` (ort-static and pt2e; also written ``"ort-static:fast"``, ``"pt2e:fast"``): one
    of :data:`ORT_STATIC_VARIANTS`. ``faithful`` keeps the text encoder and duration predictor
    FP32 (integer durations equal FP32's) and, for VITS ort-static, the decoder's full-rate stage
    float; ``fast`` quantizes them (VITS ort-static: text encoder static, duration predictor
    weight-only; pt2e: both INT8 except the duration predictor's spline flows) for speed and
    size. ``None``: :data:`DEFAULT_VARIANT` of the model's architecture.
    """
    if isinstance(recipe, str) and ":" in recipe:
        recipe, named = recipe.split(":", 1)
        if variant is not None and variant != named:
            raise InputError(f"preset variant given twice: {named!r} in the name and variant={variant!r}")
        variant = named
    config = getattr(model, "config", model)
    arch = getattr(config, "arch", "vits")
    if variant is not None:
        recipe_class(recipe)  # an unknown recipe is reported as such first
        _check_variant(recipe, variant)
    variant = variant or DEFAULT_VARIANT.get(arch, "fast")
    if recipe == "eager":
        keep = EAGER_KEEP_FLOAT if arch == "vits" else ("dp",)
        return EagerRecipe(per_channel=True, act_observer="histogram", keep_float=keep)
    if recipe == "ort-static":
        return _ort_static_preset(config, arch, variant)
    if recipe == "pt2e":
        return _pt2e_preset(arch, variant)
    if recipe == "ort-dynamic":
        # no layer choice to make (every Conv/MatMul weight INT8, activations ranged at run time)
        return OrtDynamicRecipe()
    raise UnsupportedError(f"unknown quantization recipe {recipe!r}: valid recipes are {', '.join(RECIPES)}")


def _pt2e_preset(arch: str, variant: str) -> PT2ERecipe:
    """The pt2e preset ``variant`` for ``arch`` (see :func:`best_for`). ``faithful`` leaves the
    text encoder and duration predictor out of the quantized stages (they run FP32 in the
    programs, so durations equal FP32's); ``fast`` quantizes the text encoder too, and for VITS
    the duration predictor except its spline flows (VITS2 keeps its duration predictor float in
    both, as its eager preset does)."""
    if variant == "faithful":
        stages: tuple[str, ...] = ("flow", "decoder")
    elif arch == "vits":
        stages = PT2E_STAGES
    else:
        stages = tuple(st for st in PT2E_STAGES if st != "duration")
    return PT2ERecipe(per_channel=True, stages=stages, keep_float=pt2e_keep_float(arch, stages), quantize_adds=False)


def pt2e_keep_float(arch: str, stages: tuple[str, ...]) -> tuple[str, ...]:
    """The pt2e presets' float groups for ``arch`` when ``stages`` are quantized: for VITS the
    decoder's last stage and ``conv_post``, and the duration predictor's spline flows when the
    duration predictor is a quantized stage; nothing for the VITS2 MB-iSTFT decoder."""
    if arch != "vits":
        return ()
    return tuple(g for g in PT2E_KEEP_FLOAT if g.startswith("dec.") or "duration" in stages)


def _ort_static_preset(config: Any, arch: str, variant: str) -> OrtStaticRecipe:
    """The ort-static preset ``variant`` for ``arch`` (see :func:`best_for`)."""
    _check_choice("ort-static preset variant", variant, ORT_STATIC_VARIANTS)
    if arch == "vits":
        if variant == "faithful":
            return OrtStaticRecipe(per_channel=True, calibrate_method="percentile",
                                   keep_float=ORT_DURATION_PATH + ort_last_stage(config),
                                   static_prefixes=ORT_STATIC_PREFIXES_FAITHFUL, polyphase_upsampling=True)
        return OrtStaticRecipe(per_channel=True, calibrate_method="percentile", keep_float=ort_keep_float(config),
                               static_prefixes=ORT_STATIC_PREFIXES_VITS, polyphase_upsampling=True)
    # VITS2: chosen for speed on random weights (static flow helps, a static text encoder does
    # not); quality unmeasured without a trained checkpoint: run `vitsq eval` on one before
    # shipping it. The faithful variant keeps its duration path float as for VITS.
    keep = ORT_VITS2_TAIL + (ORT_DURATION_PATH if variant == "faithful" else ())
    return OrtStaticRecipe(per_channel=True, calibrate_method="minmax", keep_float=keep,
                           static_prefixes=ORT_STATIC_PREFIXES_VITS2, polyphase_upsampling=True)
