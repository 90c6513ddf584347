"""The ExecuTorch backend: runs an artifact's ``encoder.pte`` / ``decoder.pte`` programs.

How the model is cut into the two programs, and why, is told in :mod:`vitsq.export.executorch`
(which writes them); this module holds what running them needs: the file names and bounds both
sides agree on, the host-side expansion between the programs, ExecuTorch's process-wide thread
pool, and :class:`ExecuTorchSynthesizer`.

An artifact exported with streaming methods (``decoder.pte``'s ``flow`` and ``step_first`` /
``step_next`` / ``step_last`` beside its ``forward``, see :mod:`vitsq.export.executorch_stream`)
streams chunk by chunk (:class:`StepPrograms`): encoder and host expansion as for a whole
sentence, the flow once, then the step methods on the schedule's chunks. A sentence the schedule
would decode in one chunk runs ``forward`` itself, so it equals the non-streamed synthesis by
construction.
"""

from __future__ import annotations

import logging
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np
import torch

from vitsq.errors import InputError, ModelLoadError, UnsupportedError
from vitsq.synth import BaseSynthesizer

if TYPE_CHECKING:
    from vitsq.models.config import VitsConfig

log = logging.getLogger(__name__)

KIND = "executorch"
ENCODER_FILE = "encoder.pte"
DECODER_FILE = "decoder.pte"
# streaming methods of decoder.pte (beside "forward"): the reverse flow, once per sentence, and
# the chunk-by-chunk decoder's first call, later calls and last (flushing) call
FLOW_METHOD = "flow"
STEP_METHODS = {"first": "step_first", "next": "step_next", "last": "step_last"}
EXPORT_VERSION = 1
MIN_TOKENS = 2  # torch.export specializes sizes 0 and 1; shorter input is padded and masked
MIN_FRAMES = 2

_QUANTIZED_KERNELS_LOADED = False


def _load_quantized_kernels() -> None:
    """Register ExecuTorch's quantized portable kernels with the Python runtime (once).

    INT8 programs keep some ``quantize_per_tensor``/``dequantize_per_tensor`` ops outside the
    XNNPACK partitions (around ops XNNPACK refuses with dynamic shapes). The ``executorch`` wheel
    ships their kernels in ``executorch/lib/libexecutorch_kernels_quantized.so`` but its runtime
    bindings do not load it (``load_method`` then fails with OperatorMissing, 0x14); loading the
    library globally runs its kernel registration.
    """
    global _QUANTIZED_KERNELS_LOADED
    if _QUANTIZED_KERNELS_LOADED:
        return
    import ctypes

    from executorch.extension.pybindings import portable_lib

    lib = Path(portable_lib.__file__).resolve().parents[2] / "lib" / "libexecutorch_kernels_quantized.so"
    if not lib.is_file():
        raise ModelLoadError(f"this executorch installation lacks {lib.name}, needed by INT8 programs")
    ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL)
    _QUANTIZED_KERNELS_LOADED = True


#: ExecuTorch synthesizers alive in this process (their XNNPACK delegates hold the thread pool).
_LIVE_SYNTHS: "weakref.WeakSet[ExecuTorchSynthesizer]" = weakref.WeakSet()


def threadpool_size() -> int:
    """Threads in ExecuTorch's process-wide pool, on which XNNPACK runs its kernels."""
    from executorch.extension.pybindings import portable_lib

    return int(portable_lib._threadpool_get_thread_count())


def set_threadpool_size(threads: int) -> int:
    """Resize ExecuTorch's process-wide thread pool to ``threads`` and return its size.

    The pool starts with one thread per core and ignores ``torch.set_num_threads``, so without
    this an ExecuTorch variant benchmarked "with 1 thread" ran on every core. It can only be
    resized while no program that ran on it is alive: with executorch 1.5.1, resizing under a
    loaded XNNPACK method crashed the process (segfault), so that case raises
    :class:`~vitsq.errors.UnsupportedError` instead.
    """
    from executorch.extension.pybindings import portable_lib

    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise InputError(f"threads must be an integer >= 1, got {threads!r}")
    current = threadpool_size()
    if threads == current:
        return current
    if len(_LIVE_SYNTHS):
        raise UnsupportedError(
            f"ExecuTorch's thread pool has {current} threads and cannot be resized to {threads} while "
            f"{len(_LIVE_SYNTHS)} ExecuTorch model(s) are loaded in this process (the runtime crashes): "
            f"load every ExecuTorch model with the same threads, or release the others first")
    portable_lib._unsafe_reset_threadpool(threads)
    log.info("ExecuTorch thread pool resized %d -> %d threads", current, threads)
    return threadpool_size()


def encode_sentence(encoder: Any, config: "VitsConfig", ids: Sequence[int], speaker: int, seed: int,
                    scales: tuple[float, float, float], max_frames: int) -> tuple[torch.Tensor, int, torch.Tensor]:
    """Program A and the host expansion: ids -> (z_p [1, C, frames], frames, sid [1]).

    ``encoder``: the loaded ExecuTorch method. Noise is drawn from
    ``torch.Generator().manual_seed(seed)`` in :meth:`VITS.infer`'s order.
    """
    from vitsq.models.vits import sample_frame_noise, sample_token_noise

    noise_scale, length_scale, noise_w = scales
    c = config.inter_channels
    gen = torch.Generator().manual_seed(int(seed))
    n = len(ids)
    t = max(n, MIN_TOKENS)
    x = torch.zeros(1, t, dtype=torch.long)  # [1, t], zero-padded to the program minimum
    x[0, :n] = torch.tensor(list(ids), dtype=torch.long)
    lengths = torch.tensor([n], dtype=torch.long)
    sid = torch.tensor([speaker], dtype=torch.long)
    dp_noise = sample_token_noise(lengths, t, 2, gen) * noise_w  # [1, 2, t], as VITS.infer
    m_p, logs_p, w_ceil = encoder.execute(
        [x, lengths, sid, dp_noise, torch.tensor([length_scale], dtype=torch.float32)])
    w = w_ceil[0, 0, :n].to(torch.long)  # [n] frames per symbol
    t_y = int(w.sum())
    if t_y > max_frames:
        raise InputError(f"the sentence lasts {t_y} frames, but this ExecuTorch program takes at most "
                         f"{max_frames}: split the text into shorter sentences, lower length_scale, "
                         f"or re-export with a larger max_frames")
    # expansion (VITS.expand with a one-hot alignment == repeating each symbol's column)
    m_y = torch.repeat_interleave(m_p[0, :, :n], w, dim=1).unsqueeze(0)  # [1, C, t_y]
    logs_y = torch.repeat_interleave(logs_p[0, :, :n], w, dim=1).unsqueeze(0)
    frames = max(t_y, 1)  # VITS.expand clamps the length to one (silent) frame
    if t_y == 0:
        m_y = logs_y = torch.zeros(1, c, 1)
    eps = sample_frame_noise(torch.tensor([frames]), frames, c, gen)  # [1, C, frames]
    z_p = m_y + eps * torch.exp(logs_y) * noise_scale
    return z_p.contiguous(), frames, sid


def decode_whole(decoder: Any, z_p: torch.Tensor, frames: int, sid: torch.Tensor) -> np.ndarray:
    """Program B on a whole sentence: z_p [1, C, frames] -> audio [frames * hop] float32."""
    y_mask = torch.ones(1, 1, frames)
    if frames < MIN_FRAMES:  # pad with masked frames; the decoder sees them as zeros
        pad = MIN_FRAMES - frames
        z_p = torch.nn.functional.pad(z_p, [0, pad])
        y_mask = torch.nn.functional.pad(y_mask, [0, pad])
    (audio,) = decoder.execute([z_p.contiguous(), y_mask, sid])  # [1, 1, frames' * hop]
    hop = audio.shape[-1] // z_p.shape[-1]
    return audio[0, 0, : frames * hop].numpy().astype(np.float32, copy=True)


def run_programs(encoder: Any, decoder: Any, config: "VitsConfig", ids: Sequence[int], speaker: int, seed: int,
                 scales: tuple[float, float, float], max_frames: int) -> np.ndarray:
    """One sentence through program A, the host expansion and program B -> audio [S] float32.

    ``encoder``/``decoder``: loaded ExecuTorch methods. Noise is drawn
    from ``torch.Generator().manual_seed(seed)`` in :meth:`VITS.infer`'s order.
    """
    z_p, frames, sid = encode_sentence(encoder, config, ids, speaker, seed, scales, max_frames)
    return decode_whole(decoder, z_p, frames, sid)


class StepPrograms:
    """The streaming methods of a loaded ``decoder.pte`` program: the flow and the step calls.

    ``lag_frames``: the step decoder's look-ahead (the first call brings more frames than
    that); ``max_chunk``: most frames one call takes (a longer chunk runs as several calls).
    """

    def __init__(self, program: Any, lag_frames: int, max_chunk: int) -> None:
        self.flow = program.load_method(FLOW_METHOD)
        self.methods = {role: program.load_method(name) for role, name in STEP_METHODS.items()}
        self.lag_frames = int(lag_frames)
        self.max_chunk = int(max_chunk)

    def stream(self, z_p: torch.Tensor, sid: torch.Tensor, plan: Sequence[int]) -> Iterator[np.ndarray]:
        """z_p [1, C, sum(plan)] -> the audio of each planned chunk (``plan``: frames per chunk,
        the first one > ``lag_frames``, at least two chunks)."""
        frames = int(z_p.shape[-1])
        (z,) = self.flow.execute([z_p, torch.ones(1, 1, frames), sid])  # [1, C, frames]
        states: list[torch.Tensor] | None = None
        pos = 0
        for k, n in enumerate(plan):
            pieces = []
            while n > 0:
                m = min(n, self.max_chunk)
                chunk = z[:, :, pos : pos + m].contiguous()  # [1, C, m]
                if states is None:
                    out = self.methods["first"].execute([chunk, sid])
                elif k == len(plan) - 1 and m == n:
                    out = self.methods["last"].execute([chunk, sid, *states])
                else:
                    out = self.methods["next"].execute([chunk, sid, *states])
                pieces.append(out[0][0, 0])
                states = list(out[1:])
                pos, n = pos + m, n - m
            yield torch.cat(pieces).numpy().astype(np.float32, copy=True)


class ExecuTorchSynthesizer(BaseSynthesizer):
    """Runs ``encoder.pte`` / ``decoder.pte`` through ``executorch.runtime`` (CPU, XNNPACK).

    Same noise as the torch backend for the same seed (see module docstring); a batch runs
    item by item. Only ``device="cpu"``. ``streaming``: the manifest's description of the
    streaming programs (None: the artifact has none, and :meth:`stream` yields one chunk per
    sentence).
    """

    backend = "executorch"

    def __init__(self, directory: str | Path, config: "VitsConfig", name: str, frontend: Any, *,
                 max_tokens: int, max_frames: int, threads: int | None = None,
                 streaming: dict[str, Any] | None = None, **kwargs: Any) -> None:
        from executorch.runtime import Runtime

        directory = Path(directory)
        paths = [directory / ENCODER_FILE, directory / DECODER_FILE]
        kwargs.setdefault("artifact_paths", paths)
        super().__init__(name, config, frontend, **kwargs)
        self.directory = directory
        self.max_tokens = int(max_tokens)
        self.max_frames = int(max_frames)
        runtime = Runtime.get()
        if threads is not None:  # before loading: the pool cannot change under a loaded program
            set_threadpool_size(threads)
        if self.quantization:
            _load_quantized_kernels()
        self._stream_info = streaming
        self._step: StepPrograms | None = None
        try:
            self._programs = [runtime.load_program(str(p)) for p in paths]
            self._encoder, self._decoder = (p.load_method("forward") for p in self._programs)
        except Exception as exc:  # the runtime raises RuntimeError/ValueError with its own codes
            raise ModelLoadError(f"executorch.runtime cannot load the programs in {directory}: {exc}") from exc
        if streaming:
            self.streaming = "frames"  # its methods load on the first stream: loading costs nothing more
        _LIVE_SYNTHS.add(self)

    def _step_programs(self) -> StepPrograms:
        if self._step is None:
            info = self._stream_info
            try:
                self._step = StepPrograms(self._programs[1], info["lag_frames"], info["max_chunk"])
            except Exception as exc:
                raise ModelLoadError(f"executorch.runtime cannot load the streaming methods of "
                                     f"{self.directory / DECODER_FILE}: {exc}") from exc
        return self._step

    def _check_tokens(self, batch: list[list[int]]) -> None:
        too_long = [len(ids) for ids in batch if len(ids) > self.max_tokens]
        if too_long:
            raise InputError(f"a sentence has {max(too_long)} symbol ids, but this ExecuTorch program takes at "
                             f"most {self.max_tokens} per sentence: split the text into shorter sentences, or "
                             f"re-export with a larger max_tokens")

    def _run(self, batch: list[list[int]], speakers: list[int], scales: tuple[float, float, float],
             seeds: list[int]) -> list[np.ndarray]:
        self._check_tokens(batch)
        return [run_programs(self._encoder, self._decoder, self.config, ids, spk, seed, scales, self.max_frames)
                for ids, spk, seed in zip(batch, speakers, seeds)]

    def _stream_ids(self, ids, speaker, scales, seed, schedule) -> Iterator[tuple[np.ndarray, bool]]:
        if self._stream_info is None:
            yield from super()._stream_ids(ids, speaker, scales, seed, schedule)
            return
        step = self._step_programs()
        self._check_tokens([ids])
        z_p, frames, sid = encode_sentence(self._encoder, self.config, ids, speaker, seed, scales, self.max_frames)
        plan = schedule.plan(frames, step.lag_frames)
        if len(plan) == 1:  # one chunk: the whole-sentence method, identical to synthesize by construction
            yield decode_whole(self._decoder, z_p, frames, sid), True
            return
        for k, audio in enumerate(step.stream(z_p, sid, plan)):
            yield audio, k == len(plan) - 1

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d["max_tokens"] = self.max_tokens
        d["max_frames"] = self.max_frames
        d["device"] = "cpu"
        d["threads"] = threadpool_size()
        d["streaming"] = self.streaming
        return d


def load_executorch_artifact(directory: str | Path, manifest: dict[str, Any], backend: str = "executorch",
                             device: str = "cpu", **kw: Any) -> ExecuTorchSynthesizer:
    """Registry loader for ``kind: executorch`` folders (see :data:`vitsq.registry.ARTIFACT_LOADERS`).

    The folder holds only ExecuTorch programs, so it always runs on the ExecuTorch runtime:
    ``backend="executorch"``, or ``"torch"`` -- the default of ``vitsq.load`` and the CLI, taken
    as "no preference" (logged) so ``vitsq synth DIR`` works without ``--backend``. ``"onnx"`` is
    refused. Only ``device="cpu"`` (XNNPACK is a CPU delegate).
    """
    from vitsq.manifest import manifest_config, verify_manifest
    from vitsq.text import make_frontend

    directory = Path(directory)
    if backend not in ("executorch", "torch"):
        raise UnsupportedError(f"{directory} is an ExecuTorch artifact: it runs on the executorch backend, "
                               f"not {backend!r} (load the source model for torch/onnx)")
    if backend == "torch":
        log.info("%s holds ExecuTorch programs: running them on the executorch backend", directory)
    if str(device) != "cpu":
        raise UnsupportedError(f"ExecuTorch programs with the XNNPACK delegate run on cpu, not {device!r}")
    verify_manifest(directory, manifest)
    et = manifest.get("executorch")
    if not isinstance(et, dict) or "max_tokens" not in et or "max_frames" not in et:
        raise ModelLoadError(f"{directory}/vitsq.json has no executorch section with max_tokens/max_frames")
    if et.get("export_version") != EXPORT_VERSION:
        raise ModelLoadError(f"{directory}: ExecuTorch export version {et.get('export_version')!r} is not "
                             f"supported (this vitsq reads {EXPORT_VERSION}): re-export the model")
    config = manifest_config(manifest)
    name = manifest.get("name") or manifest.get("source", {}).get("name") or directory.name
    recipe = et.get("recipe", "fp32")
    return ExecuTorchSynthesizer(
        directory, config, f"{name}-et-{recipe}", make_frontend(config),
        max_tokens=et["max_tokens"], max_frames=et["max_frames"], threads=kw.pop("threads", None),
        streaming=_streaming_section(directory, manifest),
        label=manifest.get("label", "trained"), quantization=manifest.get("quantization"),
        extra_info={"source": manifest.get("source", {}).get("source"), "artifact": str(directory),
                    "executorch_recipe": recipe},
    )


def _streaming_section(directory: Path, manifest: dict[str, Any]) -> dict[str, Any] | None:
    """The manifest's description of the streaming methods (None when the artifact has none), checked."""
    st = manifest["executorch"].get("streaming")
    if st is None:
        return None
    methods = {"flow": FLOW_METHOD, **STEP_METHODS}
    ok = (isinstance(st, dict) and all(isinstance(st.get(k), int) and st[k] > 0 for k in ("lag_frames", "max_chunk"))
          and st["max_chunk"] > st["lag_frames"] and st.get("methods") == methods)
    if not ok:
        raise ModelLoadError(f"{directory}/vitsq.json: the executorch streaming section is not valid (it needs "
                             f"lag_frames < max_chunk and the {DECODER_FILE} methods {methods}): re-export the model")
    return st
