"""The PyTorch VITS converted from the embedded Piper voice against ONNX Runtime on the original file."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from vitsq.errors import InputError, ModelLoadError
from vitsq.models.config import VitsConfig

SENTENCES = [
    "Hello world.",
    "The quick brown fox jumps over the lazy dog.",
    "Is this the right way to the station?",
    "Yes!",
    "She sold seventeen sea shells, then bought three more on Tuesday.",
    "Please call me back at five thirty.",
    "Quantization keeps the model small; calibration keeps it accurate.",
    "Wow, what a surprise!",
    "Dr. Smith arrived at 10 o'clock with 42 patients' records.",
    "Never underestimate the power of a well-placed comma, he said.",
    "The museum opens on the first Monday of every month.",
    "How many kilometers is it from Boston to New York?",
    "I can't believe it's already November.",
    "Thin thick thistles thrive in thorny thickets.",
    "Could you, perhaps, speak a little more slowly?",
    "Our train leaves from platform nine at noon.",
    "Rain, wind and snow: the forecast promises everything.",
    "He whispered, and the room fell silent.",
    "A long sentence with many words tests whether the attention and the alignment stay correct "
    "over a larger number of phonemes than usual.",
    "Okay.",
    "Zebras, yaks and quokkas live in very different places.",
    "Jump!",
]


def _rel_err(a: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(a - ref).max() / np.abs(ref).max())


def test_torch_matches_onnxruntime_on_original_voice(joe_torch, joe_onnx):
    """Zero noise: same sample count and max|diff|/max|ref| < 1e-3 on >= 20 sentences."""
    assert len(SENTENCES) >= 20
    for text in SENTENCES:
        for ids in joe_torch.text_to_ids(text):
            ours = joe_torch.synthesize_ids(ids, noise_scale=0, noise_w=0).samples
            ref = joe_onnx.synthesize_ids(ids, noise_scale=0, noise_w=0).samples
            assert len(ours) == len(ref), text
            assert _rel_err(ours, ref) < 1e-3, text


def test_length_scale_matches_onnxruntime(joe_torch, joe_onnx):
    ids = joe_torch.text_to_ids("Slow and steady wins the race.")[0]
    for ls in (0.7, 1.4):
        ours = joe_torch.synthesize_ids(ids, noise_scale=0, noise_w=0, length_scale=ls).samples
        ref = joe_onnx.synthesize_ids(ids, noise_scale=0, noise_w=0, length_scale=ls).samples
        assert len(ours) == len(ref)
        assert _rel_err(ours, ref) < 1e-3


@pytest.mark.parametrize("noise", [0.0, None])
def test_batch_equals_unbatched(joe_torch, noise):
    """Padded items equal their unbatched runs. What remains is float rounding of the encoder and
    flow at another batch shape (measured ~3e-5 of peak, the unpadded longest item included);
    the padding itself no longer reaches the decoder's output (it did by up to 55 % of peak)."""
    texts = ["Hi.", "A much longer sentence pads the batch to many more phonemes.", "Medium length here."]
    kw = {} if noise is None else {"noise_scale": noise, "noise_w": noise}
    batch = joe_torch.synthesize_batch(texts, seed=7, **kw)
    for text, b in zip(texts, batch):
        single = joe_torch.synthesize(text, seed=7, **kw)
        assert len(b.samples) == len(single.samples)
        assert _rel_err(b.samples, single.samples) < 2e-4


def test_padded_batch_is_exact_in_float64(joe_torch):
    """In float64 the rounding left in float32 vanishes: 5, 60 and 23 tokens in one padded batch
    equal their unbatched runs to 1e-10 of peak (no leak from the padding anywhere)."""
    import copy

    model = copy.deepcopy(joe_torch.model).double()
    lengths = [5, 60, 23]
    gen = torch.Generator().manual_seed(0)
    x = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    for i, n in enumerate(lengths):
        x[i, :n] = torch.randint(1, model.config.n_vocab, (n,), generator=gen)
    kw = dict(noise_scale=0.667, length_scale=1.0, noise_w=0.8)
    with torch.no_grad():
        batch = model.infer(x, torch.tensor(lengths), generator=[torch.Generator().manual_seed(i) for i in range(3)], **kw)
        for i, n in enumerate(lengths):
            alone = model.infer(x[i : i + 1, :n], torch.tensor([n]), generator=[torch.Generator().manual_seed(i)], **kw)
            m = int(alone.audio_lengths[0])
            ref = alone.audio[0, 0, :m]
            assert int(batch.audio_lengths[i]) == m
            assert (batch.audio[i, 0, :m] - ref).abs().max() <= 1e-10 * ref.abs().max(), f"item {i}"


def test_masked_hifigan_decoder_equals_items_alone(joe_torch):
    """The one-batch masked path of the HiFi-GAN decoder (what a traced graph runs): 1e-5 of peak."""
    model = joe_torch.model
    lengths = [5, 60, 1]
    gen = torch.Generator().manual_seed(0)
    y_mask = (torch.arange(max(lengths))[None] < torch.tensor(lengths)[:, None]).float().unsqueeze(1)
    z = torch.randn(len(lengths), model.config.inter_channels, max(lengths), generator=gen) * y_mask
    with torch.no_grad():
        audio, _ = model.vocode(z, None, y_mask)
        leaky, _ = model.vocode(z, None)
        for i, n in enumerate(lengths):
            ref = model.vocode(z[i : i + 1, :, :n], None)[0][0, 0]
            m, peak = len(ref), ref.abs().max()
            assert (audio[i, 0, :m] - ref).abs().max() <= 1e-5 * peak, f"item {i}"
            assert torch.all(audio[i, 0, m:] == 0)
            if n < max(lengths):
                assert (leaky[i, 0, :m] - ref).abs().max() > 1e-3 * peak


def test_seeded_noise_is_reproducible_and_seed_dependent(joe_torch):
    a = joe_torch.synthesize("Same noise, same audio.", seed=3).samples
    b = joe_torch.synthesize("Same noise, same audio.", seed=3).samples
    c = joe_torch.synthesize("Same noise, same audio.", seed=4).samples
    assert np.array_equal(a, b)
    assert len(a) != len(c) or not np.allclose(a, c)


def test_long_text_is_split_into_sentences_and_joined(joe_torch):
    text = "First sentence here. Second one follows! And a third?"
    audio = joe_torch.synthesize(text, noise_scale=0, noise_w=0)
    parts = [joe_torch.synthesize_ids(ids, noise_scale=0, noise_w=0, seed=k).samples
             for k, ids in enumerate(joe_torch.text_to_ids(text))]
    assert audio.extra["sentences"] == 3 == len(parts)
    # padded items see the decoder bias (not zeros) past their end: tiny tail differences only
    assert _rel_err(audio.samples, np.concatenate(parts)) < 1e-3


def test_audio_is_plausible_speech(joe_torch):
    text = "This is a plausible sentence of normal length."
    audio = joe_torch.synthesize(text)
    assert audio.sample_rate == 22050
    assert np.isfinite(audio.samples).all()
    # ~8-20 characters per second of speech
    assert len(text) / 20 < audio.duration < len(text) / 8
    rms = float(np.sqrt(np.mean(audio.samples**2)))
    assert rms > 0.01
    assert audio.model_seconds > 0 and audio.frontend_seconds > 0 and audio.num_tokens > 20


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("text", ["", "   \n\t", "...", "?! ()"])
def test_unspeakable_text_is_rejected(joe_torch, text):
    with pytest.raises(InputError):
        joe_torch.synthesize(text)


def test_huge_text_is_rejected(joe_torch):
    with pytest.raises(InputError, match="limit"):
        joe_torch.synthesize("word " * 10_000)


@pytest.mark.parametrize("speaker", [1, 5, -1])
def test_speaker_on_single_speaker_voice(joe_torch, speaker):
    with pytest.raises(InputError, match="single speaker"):
        joe_torch.synthesize("Hello.", speaker=speaker)


def test_bad_ids_and_scales(joe_torch):
    with pytest.raises(InputError, match="vocabulary"):
        joe_torch.synthesize_ids([1, 300, 2])
    with pytest.raises(InputError, match="empty"):
        joe_torch.synthesize_ids([])
    with pytest.raises(InputError, match="length_scale"):
        joe_torch.synthesize("Hello.", length_scale=0)
    with pytest.raises(InputError, match="noise_scale"):
        joe_torch.synthesize("Hello.", noise_scale=float("nan"))


@pytest.fixture()
def joe_copy(tmp_path):
    from vitsq.registry import joe_paths

    onnx_path, json_path = joe_paths()
    dst = tmp_path / "voice.onnx"
    shutil.copy(onnx_path, dst)
    shutil.copy(json_path, tmp_path / "voice.onnx.json")
    return dst


def test_truncated_onnx_is_a_clear_error(joe_copy):
    import vitsq

    data = joe_copy.read_bytes()
    joe_copy.write_bytes(data[: len(data) // 3])
    with pytest.raises(ModelLoadError, match="corrupt"):
        vitsq.load(str(joe_copy))


def test_missing_files_are_clear_errors(tmp_path, joe_copy):
    import vitsq

    with pytest.raises(InputError, match="not found"):
        vitsq.load(str(tmp_path / "nope.onnx"))
    with pytest.raises(InputError, match="backend"):
        vitsq.load("joe", backend="tensorflow")


@pytest.mark.parametrize("change,match", [
    ({"num_speakers": 4}, "num_speakers"),
    ({"num_symbols": 100}, "num_symbols"),
])
def test_config_that_does_not_match_weights(joe_copy, change, match):
    import vitsq

    cfg_path = joe_copy.with_name("voice.onnx.json")
    cfg = json.loads(cfg_path.read_text())
    cfg.update(change)
    if "num_symbols" in change:
        cfg["phoneme_id_map"] = {k: v for k, v in cfg["phoneme_id_map"].items() if max(v) < 100}
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match=match):
        vitsq.load(str(joe_copy))


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="hidden_channels"):
        VitsConfig(hidden_channels=191, n_heads=2)
    with pytest.raises(ValueError, match="flow_type"):
        VitsConfig(flow_type="glow")
    with pytest.raises(ValueError, match="gin_channels"):
        VitsConfig(n_speakers=4, gin_channels=0)
    with pytest.raises(ValueError, match="hop_length"):
        VitsConfig(hop_length=200)


def test_config_round_trip(joe_torch):
    cfg = joe_torch.config
    assert VitsConfig.from_dict(json.loads(cfg.to_json())) == cfg


def test_generate_path_and_masks_for_ragged_batch():
    from vitsq.models.modules import generate_path, sequence_mask

    d = torch.tensor([[[2.0, 1.0, 3.0]], [[1.0, 2.0, 0.0]]])  # second item has 2 tokens
    x_mask = sequence_mask(torch.tensor([3, 2]), 3).unsqueeze(1).float()
    y_mask = sequence_mask(torch.tensor([6, 3]), 6).unsqueeze(1).float()
    path = generate_path(d, x_mask.unsqueeze(2) * y_mask.unsqueeze(-1))[:, 0]  # [B, T_y, T_x]
    assert path[0].argmax(-1).tolist() == [0, 0, 1, 2, 2, 2]
    assert path[1, :3].argmax(-1).tolist() == [0, 1, 1]
    assert path[1, 3:].sum() == 0 and path.sum(-1).max() == 1
