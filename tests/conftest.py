"""Shared fixtures: the embedded voice loaded once per session, in both backends, the
evaluation's quality measures (speaker encoder, Whisper) for INT8-vs-FP32 budgets, and
exports made by a background process while the rest of the suite runs.

Threads: the suite runs torch (and OpenMP in its subprocesses) on one thread unless
``OMP_NUM_THREADS`` says otherwise. On the 2-core test machine another process is almost always
busy (the background exports, a test's server, other jobs); OpenMP threads that spin-wait for
a descheduled partner made a 2-thread joe synthesis ~15x slower than 1 thread on the loaded
2-core machine (30 s vs 2 s, ten times the CPU time).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before anything imports torch (see module docstring)

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
VOSK_FIXTURES = SHARED / "fixtures" / "vosk_vits2"
#: the tiny upstream Vosk VITS2 checkpoint of the golden fixtures, as a ``vitsq.load`` spec (and
#: as the ``model``/``config_path`` of a background export spec)
VOSK_TINY = {"model": str(VOSK_FIXTURES / "tiny_G_1.pth"), "config_path": str(VOSK_FIXTURES / "tiny_config.json")}


def pytest_collection_modifyitems(config, items):
    import torch

    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA GPU (none on this machine)")
        for item in items:
            if "cuda" in item.keywords:
                item.add_marker(skip)
    # tests waiting for background exports run last, so the exports are made meanwhile
    items.sort(key=lambda item: bool(_background_table(item)))  # stable: order kept otherwise


@pytest.fixture(scope="session")
def joe_torch():
    import vitsq

    return vitsq.load("joe", backend="torch")


@pytest.fixture(scope="session")
def vosk_tiny():
    """The tiny upstream Vosk VITS2 checkpoint of the golden fixtures (../shared), in torch."""
    import vitsq

    ckpt = Path(VOSK_TINY["model"])
    assert ckpt.is_file(), f"golden fixture missing: {ckpt} (copy ../shared/fixtures beside the repo)"
    return vitsq.load(ckpt, config_path=VOSK_TINY["config_path"])


@pytest.fixture(scope="session")
def fp32_durations(joe_torch):
    """``durations(ids) -> [T] int``: FP32 PyTorch's integer frames per symbol for one sentence at
    zero noise and the voice's length scale, what a faithful INT8 preset must reproduce exactly."""
    import torch

    m, length_scale = joe_torch.model, joe_torch.resolve().length_scale

    def durations(ids):
        x, xl = torch.tensor([list(ids)]), torch.tensor([len(ids)])  # [1, T], [1]
        with torch.inference_mode():
            h, m_p, _, x_mask = m.encode(x, xl, None)
            w = m.predict_durations(h, x_mask, None, torch.zeros_like(m_p[:, :2]), length_scale)  # [1, 1, T]
        return w.reshape(-1).numpy()

    return durations


@pytest.fixture(scope="session")
def joe_onnx():
    import vitsq

    return vitsq.load("joe", backend="onnx")


@pytest.fixture(scope="session")
def quality_vs_fp32():
    """``compare(texts, fp32_audio, int8_audio, language="en") -> (similarities, wer)``: the
    evaluation's measures of an INT8 variant against FP32 on the same sentences, as INT8 budgets
    judge them -- resemblyzer speaker similarity of each pair (a list) and corpus-level Whisper
    WER of each side (``{"fp32": ..., "int8": ...}``). The encoder and Whisper load once per session.
    """
    from vitsq.evaluate.asr import WhisperASR
    from vitsq.evaluate.metrics import SpeakerEncoder, cosine_similarity, score_transcripts

    encoder, asr = SpeakerEncoder(), WhisperASR()

    def compare(texts, fp32_audio, int8_audio, language="en"):
        assert len(texts) == len(fp32_audio) == len(int8_audio)
        sims = [cosine_similarity(encoder.embed(a.samples, a.sample_rate), encoder.embed(b.samples, b.sample_rate))
                for a, b in zip(fp32_audio, int8_audio)]
        wer = {name: score_transcripts(texts, [asr.transcribe(x.samples, x.sample_rate, language) for x in audio],
                                       language).wer
               for name, audio in (("fp32", fp32_audio), ("int8", int8_audio))}
        return sims, wer

    return compare


# --------------------------------------------------------------------------- background exports
def _background_table(item) -> dict:
    """The ``BACKGROUND_EXPORTS`` table of a test's module: ``{fixture name: export spec}``."""
    return getattr(getattr(item, "module", None), "BACKGROUND_EXPORTS", None) or {}


def _tuples(value):
    """``value`` with its lists (and lists in its tuples) made tuples: a config change as JSON gives it."""
    return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def random_weight_synth(base, name: str, config: dict):
    """A torch synthesizer named ``name`` of a random-weight model (``torch.manual_seed(0)``;
    ``VITS2`` or ``VITS`` as the config's ``arch`` says) of ``base``'s config with the ``config``
    changes, with ``base``'s front-end. The background worker makes one for a ``random_weights``
    spec."""
    import torch

    from vitsq.backends.torch import TorchSynthesizer
    from vitsq.models.vits import VITS
    from vitsq.models.vits2 import VITS2

    cfg = base.config.replace(**{k: _tuples(v) for k, v in config.items()})
    torch.manual_seed(0)
    model = (VITS2 if cfg.arch == "vits2" else VITS)(cfg).eval()
    return TorchSynthesizer(model, name, base.frontend, label="untrained (random weights)")


_EXPORT_WORKER = r"""
import json, os, sys, threading, time, traceback
from pathlib import Path
root, specs, parent = Path(sys.argv[1]), json.loads(sys.argv[2]), int(sys.argv[3])

def orphaned():  # pytest was killed (no finalizer ran): stop instead of exporting for nobody
    while os.getppid() == parent:
        time.sleep(2)
    os._exit(1)

threading.Thread(target=orphaned, daemon=True).start()
import torch
torch.set_num_threads(1)
import vitsq
from vitsq.export.executorch import export_executorch
from vitsq.quantize.recipes import recipe_from_dict
from conftest import random_weight_synth  # the tests folder is on PYTHONPATH
models = {}

def synth(model, config_path=None, random_weights=None):  # made once per distinct triple
    key = json.dumps([model, config_path, random_weights], sort_keys=True)
    if key not in models:
        if random_weights is None:
            models[key] = vitsq.load(model, backend="torch", config_path=config_path)
        else:
            models[key] = random_weight_synth(synth(model, config_path), **random_weights)
    return models[key]

for name, spec in specs:
    t0, c0 = time.perf_counter(), time.process_time()
    spec = dict(spec)
    try:
        model = synth(spec.pop("model"), spec.pop("config_path", None), spec.pop("random_weights", None))
        if isinstance(spec.get("recipe"), dict):
            spec["recipe"] = recipe_from_dict(spec["recipe"])
        export_executorch(model, root / name, **spec)
    except BaseException:
        (root / (name + ".error")).write_text(traceback.format_exc())
    else:
        (root / (name + ".done")).write_text("")
    print(f"{name}: {time.perf_counter() - t0:.0f} s wall, {time.process_time() - c0:.0f} s CPU", flush=True)
"""


class BackgroundExports:
    """ExecuTorch exports made by one worker process, in the order tests first need them.

    Lowering to XNNPACK is single-threaded Python (minutes per program on two cores), so the
    worker runs on the second core while the rest of the suite runs on the first; the tests that
    use the exports run last (``pytest_collection_modifyitems``) and :meth:`path` waits for each.
    A spec (JSON-ready: it goes to the worker as JSON) is ``export_executorch``'s keyword
    arguments plus ``model`` (a ``vitsq.load`` spec), optional ``config_path``, and optional
    ``random_weights``: ``{"name": ..., "config": {config changes}}`` exports
    :func:`random_weight_synth` of the loaded model instead of the model itself. A ``recipe`` may
    be a name or a recipe's ``to_dict()`` (the worker rebuilds it with ``recipe_from_dict``).
    The worker calls exactly ``export_executorch``, loading each model once.
    """

    TIMEOUT_S = 3600  # per export, counted from the first wait: a hung worker fails, never blocks CI

    def __init__(self, root: Path, specs: dict[str, dict]) -> None:
        self.root, self.specs, self.proc = root, dict(specs), None
        if specs:
            self.log = open(root / "worker.log", "w")
            tests = str(Path(__file__).resolve().parent)
            path = os.pathsep.join(p for p in (tests, os.environ.get("PYTHONPATH")) if p)
            self.proc = subprocess.Popen([sys.executable, "-c", _EXPORT_WORKER, str(root),
                                          json.dumps(list(specs.items())), str(os.getpid())],
                                         stdout=self.log, stderr=subprocess.STDOUT, cwd=root,
                                         env={**os.environ, "PYTHONPATH": path})

    def path(self, name: str) -> Path:
        """The artifact folder of export ``name``, once made; fails the test if it was not."""
        if name not in self.specs:
            pytest.fail(f"{name} is not a background export of the collected tests: "
                        f"known {sorted(self.specs)}", pytrace=False)
        deadline = time.monotonic() + self.TIMEOUT_S
        while True:
            exited = self.proc.poll() is not None  # before the markers: one written just before exiting counts
            if (self.root / f"{name}.done").exists():
                return self.root / name
            if (self.root / f"{name}.error").exists():
                pytest.fail(f"background export {name} failed:\n" + (self.root / f"{name}.error").read_text(),
                            pytrace=False)
            if exited or time.monotonic() > deadline:
                what = f"exited with code {self.proc.returncode}" if exited else "timed out"
                log = (self.root / "worker.log").read_text(errors="replace")[-3000:]
                pytest.fail(f"export worker {what} before making {name}:\n{log}", pytrace=False)
            time.sleep(0.5)

    def close(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:  # the session ended before every export was used (-x, ^C)
                self.proc.terminate()
                try:
                    self.proc.wait(30)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            self.log.close()


@pytest.fixture(scope="session", autouse=True)
def background_exports(request, tmp_path_factory):
    """:class:`BackgroundExports` of every ``BACKGROUND_EXPORTS`` entry (a module-level
    ``{fixture name: export spec}`` table) that a collected test uses as a fixture; autouse so
    the worker starts with the first test of the session, not with the first test that waits."""
    specs: dict[str, dict] = {}
    for item in request.session.items:
        table = _background_table(item)
        for name in item.fixturenames:
            if name in table:
                if specs.setdefault(name, table[name]) != table[name]:
                    raise pytest.UsageError(f"two BACKGROUND_EXPORTS tables define {name} differently: "
                                            "rename one fixture")
    exports = BackgroundExports(tmp_path_factory.mktemp("background-exports"), specs)
    yield exports
    exports.close()


def per_sentence_error(chunks, reference):
    """Largest |streamed - reference| over a sentence of streamed ``chunks`` (AudioChunks),
    relative to that sentence's peak in ``reference`` (the non-streamed samples)."""
    import numpy as np

    streamed = np.concatenate([c.samples for c in chunks])
    assert streamed.shape == reference.shape
    worst, start = 0.0, 0
    for k in range(max(c.sentence for c in chunks) + 1):
        n = sum(len(c.samples) for c in chunks if c.sentence == k)
        ref = reference[start : start + n]
        worst = max(worst, float(np.abs(streamed[start : start + n] - ref).max() / np.abs(ref).max()))
        start += n
    return worst


def assert_same_16bit(got, ref) -> None:
    """Streamed = whole clip in 16-bit samples: same length, and a sample may round one step the
    other way, rarely (the float parts of a chunked decoder agree within float rounding)."""
    import numpy as np

    assert len(got) == len(ref)
    diff = np.abs(got.astype(np.int32) - ref.astype(np.int32))
    assert diff.max() <= 1, diff.max()
    assert (diff > 0).mean() < 0.01, (diff > 0).mean()
