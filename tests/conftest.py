"""Shared fixtures: the embedded voice loaded once per session, in both backends."""

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
