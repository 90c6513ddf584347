"""Shared fixtures: the embedded voice loaded once per session, in both backends, and the
evaluation's quality measures (speaker encoder, Whisper) for INT8-vs-FP32 budgets."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def pytest_collection_modifyitems(config, items):
    import torch

    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA GPU (none on this machine)")
        for item in items:
            if "cuda" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def joe_torch():
    import vitsq

    return vitsq.load("joe", backend="torch")


@pytest.fixture(scope="session")
def vosk_tiny():
    """The tiny upstream Vosk VITS2 checkpoint of the golden fixtures (../shared), in torch."""
    import vitsq

    fixtures = SHARED / "fixtures" / "vosk_vits2"
    ckpt = fixtures / "tiny_G_1.pth"
    assert ckpt.is_file(), f"golden fixture missing: {ckpt} (copy ../shared/fixtures beside the repo)"
    return vitsq.load(ckpt, config_path=fixtures / "tiny_config.json")


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
