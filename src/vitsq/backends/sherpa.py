"""The sherpa-onnx backend: runs a sherpa-onnx Piper folder (``vitsq export --format sherpa``) in
``sherpa_onnx.OfflineTts``, the runtime many apps ship (Android, iOS, Raspberry Pi, servers).

vitsq's front-end makes the ids; sherpa-onnx 2.x takes phonemes, not ids, so each id sequence
``^ _ p1 _ p2 _ ... $`` is turned back into the phoneme characters ``p1 p2 ...``
(``GenerationConfig.phoneme_codepoints``), from which sherpa-onnx rebuilds exactly those ids
with the folder's ``tokens.txt``. Silence is not rescaled (``silence_scale=1``; sherpa-onnx's
default 0.2 shortens pauses), so the audio is the graph's output, as on the other backends.

sherpa-onnx fixes ``noise_scale`` and ``noise_w`` when a model is loaded and takes the length
scale per call (``speed = 1 / length_scale``), so this backend keeps one loaded model per pair of
noise scales in use (the last :data:`MAX_ENGINES`, each loaded on first use). Noise is drawn inside the graph by ONNX
Runtime, unseeded, as on the ``onnx`` backend: compare at zero noise.

sherpa-onnx exits the whole process (not an exception) on a model without its metadata or on
a ``tokens.txt`` it cannot read, so both are checked here first and refused with a ModelLoadError.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vitsq.errors import InputError, ModelLoadError, UnsupportedError
from vitsq.synth import BaseSynthesizer, check_threads

if TYPE_CHECKING:
    from vitsq.models.config import VitsConfig

log = logging.getLogger(__name__)

#: Models kept loaded at once, one per (noise_scale, noise_w) pair.
MAX_ENGINES = 2
#: Metadata keys sherpa-onnx 2.x requires (it exits the process when one is missing).
REQUIRED_METADATA = ("sample_rate", "n_speakers", "language", "comment")
BOS, EOS, PAD = "^", "$", "_"
INSTALL_HINT = "pip install sherpa-onnx==2.0.1 (in vitsq's test extra)"


def read_tokens(path: Path) -> dict[int, str]:
    """``tokens.txt`` -> {id: symbol}, refusing what sherpa-onnx would exit on (several
    characters per symbol, a repeated symbol, a line that is not ``symbol id``)."""
    out: dict[int, str] = {}
    seen: set[str] = set()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"cannot read {path}: {exc}") from exc
    for n, line in enumerate(lines, 1):
        if not line.strip() and line != " ":
            continue
        sym, _, num = line.rpartition(" ")
        if not num.isdigit() or len(sym) != 1:
            raise ModelLoadError(f"{path}:{n}: {line!r} is not 'SYMBOL ID' with a one-character symbol "
                                 "(the only form sherpa-onnx reads)")
        if sym in seen:
            raise ModelLoadError(f"{path}:{n}: symbol {sym!r} appears twice (sherpa-onnx refuses that)")
        seen.add(sym)
        out[int(num)] = sym
    missing = [s for s in (BOS, EOS, PAD) if s not in seen]
    if missing:
        raise ModelLoadError(f"{path} lacks {', '.join(repr(s) for s in missing)}: sherpa-onnx builds every "
                             "id sequence from ^, _ and $")
    return out


def check_model_metadata(model_file: Path) -> dict[str, str]:
    """The graph's metadata, refused (ModelLoadError) unless sherpa-onnx can load it as a Piper voice."""
    import onnx

    try:
        proto = onnx.load(str(model_file), load_external_data=False)
    except Exception as exc:
        raise ModelLoadError(f"{model_file} is not a readable ONNX model (truncated or corrupt?): {exc}") from exc
    meta = {p.key: p.value for p in proto.metadata_props}
    missing = [k for k in REQUIRED_METADATA if k not in meta]
    if missing:
        raise ModelLoadError(f"{model_file} lacks the metadata {', '.join(missing)} that sherpa-onnx reads: "
                             "re-export it with vitsq export --format sherpa")
    if "piper" not in meta["comment"]:
        raise ModelLoadError(f"{model_file}: metadata comment={meta['comment']!r}; sherpa-onnx runs a Piper graph "
                             "only with 'piper' in it")
    return meta


class SherpaSynthesizer(BaseSynthesizer):
    """A Piper graph in ``sherpa_onnx.OfflineTts`` (see the module docstring)."""

    backend = "sherpa"
    seedable = False
    unseeded_reason = ("sherpa-onnx draws the noise inside the ONNX graph (ONNX Runtime), which vitsq cannot "
                       "seed, so the seed would be silently ignored")
    batching = "items"  # sherpa-onnx runs batch size 1

    def __init__(self, model_file: str | Path, tokens_file: str | Path, config: "VitsConfig", name: str,
                 frontend: Any, *, threads: int | None = None, metadata_checked: bool = False,
                 **kwargs: Any) -> None:
        """``metadata_checked``: the caller vouches for the graph's sherpa-onnx metadata (a verified
        ``vitsq.json`` of kind ``sherpa``, whose writer adds it); otherwise it is read and checked
        here (parsing a large graph takes seconds). sherpa-onnx itself loads on first synthesis."""
        try:
            import sherpa_onnx
        except ImportError as exc:
            raise ModelLoadError(f"the sherpa backend needs the sherpa-onnx package: {INSTALL_HINT}; "
                                 "or load the folder with backend='onnx'") from exc
        self._so = sherpa_onnx
        self.model_file, self.tokens_file = Path(model_file), Path(tokens_file)
        kwargs.setdefault("artifact_paths", [self.model_file, self.tokens_file])
        super().__init__(name, config, frontend, **kwargs)
        self.threads = check_threads(threads)
        if not metadata_checked:
            meta = check_model_metadata(self.model_file)
            if meta["n_speakers"] != str(config.n_speakers):
                raise ModelLoadError(f"{self.model_file}: n_speakers={meta['n_speakers']} but the config has "
                                     f"{config.n_speakers} speakers: re-export the folder")
        self._symbols = read_tokens(self.tokens_file)
        ids = {s: i for i, s in self._symbols.items()}
        self._bos, self._eos, self._pad = ids[BOS], ids[EOS], ids[PAD]
        self._engines: OrderedDict[tuple[float, float], Any] = OrderedDict()

    def _engine(self, noise_scale: float, noise_w: float):
        """The ``OfflineTts`` for these noise scales (loaded on first use, least recent dropped)."""
        key = (float(noise_scale), float(noise_w))
        if key in self._engines:
            self._engines.move_to_end(key)
            return self._engines[key]
        so = self._so
        vits = so.OfflineTtsVitsModelConfig(model=str(self.model_file), tokens=str(self.tokens_file),
                                            noise_scale=key[0], noise_scale_w=key[1], length_scale=1.0)
        cfg = so.OfflineTtsConfig(model=so.OfflineTtsModelConfig(vits=vits, num_threads=self.threads or 1))
        if not cfg.validate():
            raise ModelLoadError(f"sherpa-onnx refuses the configuration of {self.model_file} (model or tokens file)")
        self._engines[key] = so.OfflineTts(cfg)
        while len(self._engines) > MAX_ENGINES:
            self._engines.popitem(last=False)
        return self._engines[key]

    def codepoints(self, ids: list[int]) -> list[int]:
        """Ids ``^ _ p1 _ ... pn _ $`` -> the codepoints of ``p1 ... pn`` (what sherpa-onnx takes)."""
        pads_ok = all(i == self._pad for i in ids[1:-1:2])
        if len(ids) < 3 or len(ids) % 2 == 0 or ids[0] != self._bos or ids[-1] != self._eos or not pads_ok:
            raise InputError("sherpa-onnx builds ids as ^ _ p1 _ ... pn _ $ from phonemes; these ids are not in "
                             "that layout (use the voice's front-end, or the onnx backend for arbitrary ids)")
        out = []
        for i in ids[2:-1:2]:
            sym = self._symbols.get(i)
            if sym is None or i in (self._bos, self._eos, self._pad):
                raise InputError(f"id {i} has no phoneme in {self.tokens_file.name}: sherpa-onnx cannot be given it")
            out.append(ord(sym))
        return out

    def _run(self, batch, speakers, scales, seeds):
        noise_scale, length_scale, noise_w = scales
        tts = self._engine(noise_scale, noise_w)
        outs = []
        for ids, spk in zip(batch, speakers):
            gen = self._so.GenerationConfig()
            gen.phoneme_codepoints = [self.codepoints(ids)]
            gen.sid = int(spk)
            gen.speed = 1.0 / float(length_scale)  # sherpa-onnx: length_scale = 1 / speed
            gen.silence_scale = 1.0
            audio = tts.generate("", gen)
            samples = np.asarray(audio.samples, dtype=np.float32)  # [S]
            if samples.size == 0:
                raise UnsupportedError(f"sherpa-onnx returned no audio for {len(ids)} ids (see its log above)")
            outs.append(samples)
        return outs

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d["threads"] = self.threads or "sherpa-onnx default (1)"
        try:
            from importlib.metadata import version

            d["sherpa_onnx"] = version("sherpa-onnx")
        except Exception:  # metadata of an unusual install: the version is informative only
            d["sherpa_onnx"] = "unknown"
        return d


def load_sherpa_artifact(directory: str | Path, manifest: dict, backend: str = "sherpa", device: str = "cpu",
                         **kw: Any):
    """A sherpa-onnx folder (kind ``sherpa``) on the ``sherpa`` backend, or its graph on ``onnx``."""
    from vitsq.manifest import manifest_config, verify_manifest
    from vitsq.text import make_frontend

    directory = Path(directory)
    if backend not in ("sherpa", "onnx"):
        raise UnsupportedError(f"{directory} is a sherpa-onnx folder: it runs on backend 'sherpa' or 'onnx', "
                               f"not {backend!r}")
    verify_manifest(directory, manifest)
    config = manifest_config(manifest)
    source = manifest.get("source") or {}
    model_file = directory / manifest.get("model_file", "model.onnx")
    common = dict(label=source.get("weights", "trained"), quantization=manifest.get("quantization"),
                  extra_info={"source": str(directory), "kind": manifest["kind"]})
    name = kw.get("name") or source.get("name") or directory.name
    if backend == "onnx":
        from vitsq.backends.onnx import OnnxSynthesizer

        return OnnxSynthesizer(model_file, config, name, make_frontend(config), threads=kw.get("threads"),
                               artifact_paths=[model_file], **common)
    # kind "sherpa" is written only by vitsq.export.sherpa, which puts the metadata in the graph,
    # and the verified manifest says the graph is the one it wrote
    return SherpaSynthesizer(model_file, directory / manifest.get("tokens_file", "tokens.txt"), config, name,
                             make_frontend(config), threads=kw.get("threads"), metadata_checked=True, **common)
