"""Calibration data: real sentences, several speakers, the user's inference settings, seeded.

Sentences come from the shipped *calibration* split (:mod:`vitsq.evaluate.sentences`), which
never overlaps the evaluation split, or from a user file (refused if it contains evaluation
sentences of a shipped language). Multi-speaker models get a seeded spread of speakers. Each
sentence is run through the full model with the same noise/length scales users synthesize with
and a seeded noise generator, so the observed activation ranges are those of real inference.

Default size (:data:`DEFAULT_CALIB` = 16): measured on the joe voice (eager all-INT8, fbgemm,
histogram observers) by calibrating on the first N calibration sentences, N = 2, 4, 8, 16, 32,
and comparing every activation scale with the previous N. Median relative change of the scales:
2.4 % (4 vs 2), 2.2 % (8 vs 4), 1.6 % (16 vs 8), 1.2 % (32 vs 16); largest single change 45 %,
27 %, 21 %, 18 %. The distance to FP32 on 4 held-out calibration-split sentences did not improve
with N (log-mel L1 1.50-1.74 nats for all N: it is dominated by which layers are INT8, see
:mod:`vitsq.quantize.sensitivity`, not by the ranges). 16 is where doubling changes the median
scale by < 2 %, at ~1/2 the calibration time of 32.

Tail-based range estimates (ONNX Runtime's percentile and entropy calibration) use 32
(:data:`DEFAULT_CALIB_TAILS`): a 99.999th percentile rests on few samples per sentence. On joe
(ort-static preset, 235 evaluation sentences, zero noise), two calibrations, 16 and 32
sentences (both still with unseeded in-graph noise), gave ΔWER +0.54 / -0.1 pt and speaker
similarity 0.969 / 0.961: the ranges, not the layer choice, moved WER by as much as the
+0.5-point budget, so the larger set is the default. With seeded calibration noise (now) the
32-sentence preset measures +0.3 pt and 0.962.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from vitsq.errors import InputError

log = logging.getLogger(__name__)

#: Sentences used when ``--calib`` is not given (chosen by measuring stability, module docstring).
DEFAULT_CALIB = 16
#: ... for recipes whose activation ranges come from distribution tails (percentile, entropy).
DEFAULT_CALIB_TAILS = 32


def default_calibration_size(recipe: Any = None) -> int:
    """Sentences to calibrate ``recipe`` with when the user does not say (see module docstring)."""
    if getattr(recipe, "calibrate_method", "minmax") in ("percentile", "entropy"):
        return DEFAULT_CALIB_TAILS
    return DEFAULT_CALIB


@dataclass(frozen=True)
class CalibrationItem:
    """One model input: symbol ids of one sentence, its speaker, and its noise seed."""

    ids: tuple[int, ...]
    speaker: int
    seed: int
    text: str = ""


@dataclass(frozen=True)
class Calibration:
    """What a model is calibrated on; its :attr:`sha256` goes into the artifact manifest."""

    sentences: tuple[str, ...]
    speakers: tuple[int, ...]  # one per sentence
    noise_scale: float
    length_scale: float
    noise_w: float
    seed: int = 0
    source: str = "calibration split"
    language: str = ""
    items: tuple[CalibrationItem, ...] = field(default=(), repr=False)

    @property
    def sha256(self) -> str:
        blob = json.dumps({"sentences": self.sentences, "speakers": self.speakers,
                           "scales": [self.noise_scale, self.length_scale, self.noise_w],
                           "seed": self.seed, "ids": [it.ids for it in self.items]}, ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    @property
    def scales(self) -> tuple[float, float, float]:
        return (self.noise_scale, self.length_scale, self.noise_w)

    def to_dict(self) -> dict[str, Any]:
        return {"sentences": len(self.sentences), "items": len(self.items), "source": self.source,
                "language": self.language, "speakers": sorted(set(self.speakers)),
                "noise_scale": self.noise_scale, "length_scale": self.length_scale, "noise_w": self.noise_w,
                "seed": self.seed, "sha256": self.sha256}


def _spread_speakers(n_items: int, n_speakers: int, seed: int) -> list[int]:
    """Seeded speaker per item, cycling through a random permutation so all get used evenly."""
    if n_speakers <= 1:
        return [0] * n_items
    rng = np.random.default_rng(seed)
    order: list[int] = []
    while len(order) < n_items:
        order.extend(int(s) for s in rng.permutation(n_speakers))
    return order[:n_items]


def make_calibration(synth: Any, n: int | None = None, sentences: Sequence[str] | None = None,
                     speakers: Sequence[int] | None = None, noise_scale: float | None = None,
                     length_scale: float | None = None, noise_w: float | None = None, seed: int = 0,
                     offset: int = 0, recipe: Any = None) -> Calibration:
    """Build a :class:`Calibration` for ``synth``.

    ``n``: number of sentences (default :func:`default_calibration_size` of ``recipe``); taken from ``sentences`` if
    given, else from the shipped calibration split of the model's language starting at
    ``offset`` (sensitivity uses a later slice as its held-out set). ``speakers``: explicit
    speaker per sentence (default: a seeded spread over all speakers). Scales default to the
    model's own inference settings. Raises InputError for sentences yielding no tokens.
    """
    from vitsq.evaluate.sentences import LANGUAGES, load_split, split_of

    n = default_calibration_size(recipe) if n is None else int(n)
    if n < 1:
        raise InputError(f"calibration needs at least 1 sentence, got {n}")
    lang = (synth.language or "").split("-")[0].split("_")[0].lower()
    if sentences is None:
        pool = load_split(lang, "calibration")
        if offset + n > len(pool):
            raise InputError(f"asked for {n} calibration sentences (from #{offset}) but the {lang} calibration "
                             f"split has {len(pool)}: use fewer (--calib) or a sentence file")
        chosen = pool[offset:offset + n]
        source = "calibration split"
    else:
        chosen = list(sentences)[offset:offset + n]
        if not chosen:
            raise InputError("calibration sentence list is empty")
        source = "user sentences"
        if lang in LANGUAGES:
            leaked = [s for s in chosen if split_of(s, lang) == "evaluation"]
            if leaked:
                raise InputError(f"{len(leaked)} calibration sentence(s) belong to the evaluation split "
                                 f"(e.g. {leaked[0]!r}): calibration and evaluation must not overlap")
    if speakers is None:
        spk = _spread_speakers(len(chosen), synth.num_speakers, seed)
    else:
        spk = [int(s) for s in speakers]
        if len(spk) != len(chosen):
            raise InputError(f"got {len(spk)} calibration speakers for {len(chosen)} sentences")
    from vitsq.synth import check_speaker

    spk = [check_speaker(s, synth.num_speakers) for s in spk]
    full = synth.resolve(noise_scale=noise_scale, length_scale=length_scale, noise_w=noise_w)  # model defaults
    scales = (full.noise_scale, full.length_scale, full.noise_w)
    items: list[CalibrationItem] = []
    for i, (text, s) in enumerate(zip(chosen, spk)):
        try:
            per_sentence = synth.text_to_ids(text)
        except InputError as exc:
            raise InputError(f"calibration sentence {text!r} yields no tokens: {exc}") from exc
        per_sentence = [ids for ids in per_sentence if ids]
        if not per_sentence:
            raise InputError(f"calibration sentence {text!r} yields no tokens")
        for k, ids in enumerate(per_sentence):
            items.append(CalibrationItem(tuple(int(t) for t in ids), s, seed + 1000 * i + k, text))
    return Calibration(tuple(chosen), tuple(spk), *scales, seed=seed, source=source, language=lang,
                       items=tuple(items))


def run_items(model: Any, items: Sequence[CalibrationItem], scales: tuple[float, float, float],
              desc: str | None = None, progress: bool = True) -> list[np.ndarray]:
    """Run ``model.infer`` on each item (batch 1, seeded noise); returns audio [S] per item.

    Batch 1 keeps padded frames out of the activation observers.
    """
    import torch
    from tqdm.auto import tqdm

    noise_scale, length_scale, noise_w = scales
    outs: list[np.ndarray] = []
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    with torch.no_grad():
        for it in tqdm(items, desc=desc, disable=not progress or desc is None, leave=False):
            x = torch.tensor([it.ids], dtype=torch.long, device=device)  # [1, T_x]
            lengths = torch.tensor([len(it.ids)], dtype=torch.long, device=device)  # [1]
            sid = torch.tensor([it.speaker], dtype=torch.long, device=device)
            gen = [torch.Generator().manual_seed(int(it.seed))]
            out = model.infer(x, lengths, sid, noise_scale=noise_scale, length_scale=length_scale,
                              noise_w=noise_w, generator=gen)
            n = int(out.audio_lengths[0])
            outs.append(out.audio[0, 0, :n].float().cpu().numpy())  # [S]
    return outs
