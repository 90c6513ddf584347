"""Vosk MB-iSTFT-VITS2: config mapping, checkpoint loading, golden match to upstream outputs.

The golden fixtures (``../shared/fixtures/vosk_vits2``, see its README) were produced by the
upstream vosk-tts training code on random weights. They are required test data: every test
that needs them FAILS when they are missing.
"""

from __future__ import annotations

import copy
import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from vitsq.errors import InputError, ModelLoadError, UnsupportedError
from vitsq.models.config import VitsConfig
from vitsq.models.vits2 import VITS2, InverseSTFT, parameter_report
from vitsq.models.vosk_ckpt import load_vosk_checkpoint, read_checkpoint
from vitsq.models.vosk_config import VoskConfigError
from vitsq.text.russian import DEFAULT_PHONEME_ID_MAP, RussianFrontend

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared/fixtures/vosk_vits2"


def fixture(name: str) -> Path:
    path = FIXTURES / name
    assert path.is_file(), f"golden fixture missing: {path} (CI must provide ../shared/fixtures/vosk_vits2)"
    return path


@pytest.fixture(scope="module")
def full_cfg_json() -> dict:
    return json.loads(fixture("full_config.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def tiny():
    model, report = load_vosk_checkpoint(fixture("tiny_G_1.pth"), fixture("tiny_config.json"))
    return model, report


@pytest.fixture(scope="module")
def golden():
    return torch.load(fixture("tiny_golden_io.pt"), map_location="cpu", weights_only=False)


def assert_rel_close(ours: torch.Tensor, ref: torch.Tensor, name: str, rel: float = 1e-4) -> None:
    assert ours.shape == ref.shape, f"{name}: shape {tuple(ours.shape)} != {tuple(ref.shape)}"
    scale = ref.abs().max().item()
    err = (ours - ref).abs().max().item()
    assert err <= rel * max(scale, 1e-12), f"{name}: max abs error {err:.3g} > {rel} x max|ref| {scale:.3g}"


# --------------------------------------------------------------------------- config
def test_full_config_mapping(full_cfg_json):
    c = VitsConfig.from_vosk_json(full_cfg_json)
    assert (c.arch, c.decoder, c.flow_type, c.phoneme_type, c.language) == ("vits2", "mb_istft", "pre_conv2", "vosk_ru", "ru")
    assert (c.n_speakers, c.gin_channels, c.n_vocab, c.subbands, c.istft_n_fft, c.istft_hop) == (200, 256, 62, 4, 16, 4)
    assert (c.sample_rate, c.hop_length, c.hidden_channels, c.n_layers) == (22050, 256, 192, 6)
    assert c.use_spk_conditioned_encoder and c.cond_layer_idx == 2 and c.use_sdp
    assert c.upsample_rates == (4, 4) and c.resblock_dilation_sizes == ((1, 3, 5),) * 3
    assert len(c.phoneme_id_map) == 62 and c.phoneme_id_map["^"] == (1,)
    assert VitsConfig.from_file(fixture("full_config.json")) == c.replace(source=str(fixture("full_config.json")))


@pytest.mark.parametrize(
    "section, key, value, message",
    [
        ("model", "transformer_flow_type", "pre_conv", "transformer_flow_type='pre_conv' is not supported"),
        ("model", "transformer_flow_type", "fft", "transformer_flow_type='fft'"),
        ("model", "use_transformer_flows", False, "use_transformer_flows=False"),
        ("model", "ms_istft_vits", True, "ms_istft_vits=True"),
        ("model", "istft_vits", True, "istft_vits=True"),
        ("model", "mb_istft_vits", False, "mb_istft_vits=False"),
        ("model", "use_spectral_norm", True, "use_spectral_norm=True"),
        ("model", "use_bert", True, "unknown or unsupported model options use_bert"),
        ("data", "sampling_rte", 22050, "unknown or unsupported data options sampling_rte"),
        ("model", "hidden_channels", "192", "model.hidden_channels='192' must be of type int"),
        ("model", "upsample_rates", [4, 8], "hop_length"),
        ("model", "gen_istft_n_fft", 15, "gen_istft_n_fft=15"),
    ],
)
def test_bad_config_rejected_by_name(full_cfg_json, section, key, value, message):
    cfg = copy.deepcopy(full_cfg_json)
    cfg[section][key] = value
    with pytest.raises(ValueError) as exc:
        VitsConfig.from_vosk_json(cfg)
    assert message in str(exc.value)


def test_config_structure_errors(full_cfg_json):
    cfg = copy.deepcopy(full_cfg_json)
    cfg["extra"] = 1
    with pytest.raises(VoskConfigError, match="unknown top-level keys extra"):
        VitsConfig.from_vosk_json(cfg)
    cfg = copy.deepcopy(full_cfg_json)
    del cfg["model"]["n_layers"]
    with pytest.raises(VoskConfigError, match="missing model.n_layers"):
        VitsConfig.from_vosk_json(cfg)
    assert issubclass(VoskConfigError, ModelLoadError)


def test_training_only_keys_are_ignored(full_cfg_json):
    cfg = copy.deepcopy(full_cfg_json)
    for k in ("slm_model", "slm_sr", "use_duration_discriminator", "duration_discriminator_type", "n_layers_q", "use_wd"):
        cfg["model"].pop(k)
    cfg["train"] = {}
    assert VitsConfig.from_vosk_json(cfg) == VitsConfig.from_vosk_json(full_cfg_json)


# --------------------------------------------------------------------------- golden match
@pytest.mark.parametrize("case_index", [0, 1])
def test_tiny_checkpoint_matches_upstream(tiny, golden, case_index):
    """Upstream's batch (second row padded) stage by stage. Upstream's decoder lets the padding
    frames leak into the padded item's last frames; ours masks them, so its unmasked decoder is
    compared with upstream's whole output and its ``infer`` with upstream's where no padding
    reaches (the unpadded item) and with each item's unbatched run."""
    model, _ = tiny
    case = golden["cases"][case_index]
    assert golden["noise_scale"] == 0 and golden["noise_scale_w"] == 0
    with torch.no_grad():
        out = model.infer(golden["x"], golden["x_lengths"], golden["sid"], noise_scale=0.0,
                          length_scale=case["length_scale"], noise_w=0.0)
        g = model.speaker_embedding(golden["sid"], golden["x"].shape[0])
        upstream_style, extra = model.vocode(out.z * out.y_mask, g)  # no mask: upstream's decoder
    a = out.attn.squeeze(1)  # [B, T_y, T_x]: upstream returns the frame-level prior
    m_p = torch.matmul(a, out.m_p.transpose(1, 2)).transpose(1, 2)
    logs_p = torch.matmul(a, out.logs_p.transpose(1, 2)).transpose(1, 2)
    assert torch.equal(out.y_mask, case["y_mask"])
    assert torch.equal(out.attn, case["attn"])
    assert_rel_close(out.z, case["z"], "z")
    assert_rel_close(m_p, case["m_p"], "m_p")
    assert_rel_close(logs_p, case["logs_p"], "logs_p")
    assert_rel_close(extra["audio_subbands"], case["audio_subbands"], "audio_subbands")
    assert_rel_close(upstream_style, case["audio"], "audio")
    assert out.audio.shape[-1] == out.y_mask.shape[-1] * 256
    assert out.audio_lengths.tolist() == (case["y_mask"].sum((1, 2)) * 256).long().tolist()
    n = out.audio_lengths.tolist()
    assert n[0] > n[1], "the golden batch pads its second item"
    assert_rel_close(out.audio[:1], case["audio"][:1], "audio of the unpadded item")
    # the padded item: upstream's leak is real (so this test would see it) ...
    with torch.no_grad():
        alone = model.infer(golden["x"][1:, : golden["x_lengths"][1]], golden["x_lengths"][1:], golden["sid"][1:],
                            noise_scale=0.0, length_scale=case["length_scale"], noise_w=0.0).audio[0, 0]
    peak = alone.abs().max()
    assert (case["audio"][1, 0, : n[1]] - alone).abs().max() > 0.05 * peak
    # ... and ours equals the item alone, with silence after its end
    assert (out.audio[1, 0, : n[1]] - alone).abs().max() <= 1e-5 * peak
    assert torch.all(out.audio[1, 0, n[1]:] == 0)


def test_load_report(tiny):
    _, report = tiny
    s = report.dropped_summary()
    assert s["enc_q"] > 0 and s["dp.post_flows"] > 0 and s["dp.flows.1"] > 0
    assert all(k.startswith(("enc_q.", "dp.post", "dp.flows.1.")) for k in report.dropped)
    assert "dec.subband_conv_post.weight" in report.folded and report.iteration == 1


def test_dropped_keys_are_logged(caplog):
    with caplog.at_level(logging.INFO, logger="vitsq.models.vosk_ckpt"):
        load_vosk_checkpoint(fixture("tiny_G_1.pth"), fixture("tiny_config.json"))
    assert "dropped training-only tensors" in caplog.text and "enc_q" in caplog.text


def _to_parametrizations(sd: dict) -> dict:
    out = {}
    for k, v in sd.items():
        if k.endswith(".weight_g"):
            out[k[: -len(".weight_g")] + ".parametrizations.weight.original0"] = v
        elif k.endswith(".weight_v"):
            out[k[: -len(".weight_v")] + ".parametrizations.weight.original1"] = v
        else:
            out[k] = v
    return out


def test_bare_state_dict_with_parametrizations(tiny, tmp_path):
    sd, _ = read_checkpoint(fixture("tiny_G_1.pth"))
    p = tmp_path / "G_2.pth"
    torch.save(_to_parametrizations(sd), p)
    model2, report = load_vosk_checkpoint(p, fixture("tiny_config.json"))
    ref = tiny[0].state_dict()
    assert report.iteration is None
    for k, v in model2.state_dict().items():
        torch.testing.assert_close(v, ref[k], rtol=1e-6, atol=1e-7)


def test_config_found_beside_checkpoint(tmp_path):
    (tmp_path / "config.json").write_bytes(fixture("tiny_config.json").read_bytes())
    (tmp_path / "G_1.pth").write_bytes(fixture("tiny_G_1.pth").read_bytes())
    model, _ = load_vosk_checkpoint(tmp_path / "G_1.pth")
    assert model.config.hidden_channels == 32
    (tmp_path / "config.json").unlink()
    with pytest.raises(ModelLoadError, match="Vosk config not found.*--config"):
        load_vosk_checkpoint(tmp_path / "G_1.pth")


def test_same_generator_same_noise(tiny, golden):
    model, _ = tiny
    x, xl, sid = golden["x"], golden["x_lengths"], golden["sid"]

    def run(seed):
        with torch.no_grad():
            return model.infer(x, xl, sid, noise_scale=0.667, length_scale=1.0, noise_w=0.8,
                               generator=torch.Generator().manual_seed(seed)).audio

    a, b, c = run(1), run(1), run(2)
    assert torch.equal(a, b)
    assert a.shape != c.shape or not torch.allclose(a, c)


@pytest.mark.parametrize("window", [4, 1])
def test_banded_relative_attention_equals_upstream_formulation(window):
    """The band form of the relative terms (VITS2's text encoder and flows) gives upstream's
    [T, 2T-1] form's outputs: sequences shorter and longer than the window, padded batch items."""
    from vitsq.models.modules import MultiHeadAttention

    torch.manual_seed(0)
    ref = MultiHeadAttention(16, 16, 2, window).eval()
    band = MultiHeadAttention(16, 16, 2, window, banded=True).eval()
    band.load_state_dict(ref.state_dict())
    for t in (1, 2, window + 1, 2 * window + 2, 37):
        x = torch.randn(2, 16, t)
        mask = torch.ones(2, 1, t)
        mask[1, :, t - t // 3 :] = 0
        attn_mask = mask.unsqueeze(2) * mask.unsqueeze(-1)
        with torch.no_grad():
            want, got = ref(x, attn_mask), band(x, attn_mask)
        assert (got - want).abs().max() <= 1e-6 * want.abs().max()


def test_vits2_attention_is_banded(tiny):
    from vitsq.models.modules import MultiHeadAttention

    attn = [m for m in tiny[0].modules() if isinstance(m, MultiHeadAttention)]
    assert attn and all(m.banded for m in attn)


def test_istft_equals_torch_istft():
    ist = InverseSTFT(16, 4)
    g = torch.Generator().manual_seed(0)
    mag = torch.rand(3, 9, 40, generator=g) + 0.1
    ph = (torch.rand(3, 9, 40, generator=g) * 2 - 1) * math.pi
    ref = torch.istft(mag * torch.exp(1j * ph), 16, 4, 16, window=torch.hann_window(16))
    torch.testing.assert_close(ist(mag, ph), ref, rtol=1e-5, atol=1e-6)
    assert not any("istft" in k or "pqmf" in k for k in VITS2(VitsConfig.from_file(fixture("tiny_config.json"))).state_dict())


# --------------------------------------------------------------------------- full model
def test_full_model_keys_and_shapes(full_cfg_json):
    listed = json.loads(fixture("full_config_state_dict_shapes.json").read_text(encoding="utf-8"))
    expected: dict[str, tuple[int, ...]] = {}
    for k, shape in listed["state_dict_shapes"].items():
        if k.startswith("enc_q.") or k.endswith(".weight_g"):
            continue
        # the inference SDP has no posterior and no slot for the flow upstream inference skips
        if k.startswith(("dp.post_", "dp.flows.1.")):
            continue
        expected[k[: -len("_v")] if k.endswith(".weight_v") else k] = tuple(shape)
    model = VITS2(VitsConfig.from_vosk_json(full_cfg_json))
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert sorted(set(ours) - set(expected)) == [] and sorted(set(expected) - set(ours)) == []
    assert ours == expected


def test_full_model_parameter_counts(full_cfg_json):
    listed = json.loads(fixture("full_config_state_dict_shapes.json").read_text(encoding="utf-8"))
    shapes = listed["state_dict_shapes"]
    report = parameter_report(VITS2(VitsConfig.from_vosk_json(full_cfg_json)))
    assert report["upstream_total"] == listed["params"] == 41_969_592
    without_q = sum(math.prod(s) for k, s in shapes.items() if not k.startswith("enc_q."))
    assert report["upstream_without_enc_q"] == without_q
    assert round(without_q / 1e6, 1) == 33.2
    assert report["inference_total"] == sum(report["by_submodule"].values())
    assert set(report["by_submodule"]) == {"enc_p", "dec", "flow", "dp", "emb_g"}
    assert 31.8e6 < report["inference_total"] < 32.0e6


# --------------------------------------------------------------------------- bad checkpoints
def _save(tmp_path, sd, name="G_9.pth"):
    p = tmp_path / name
    torch.save({"model": sd, "iteration": 9}, p)
    return p


def test_config_weights_mismatch(tmp_path, full_cfg_json):
    cfg = tmp_path / "full.json"
    cfg.write_text(json.dumps(full_cfg_json))
    with pytest.raises(ModelLoadError) as exc:
        load_vosk_checkpoint(fixture("tiny_G_1.pth"), cfg)
    msg = str(exc.value)
    assert "shape mismatches" in msg and "emb_g.weight" in msg and "n_speakers=200" in msg


def test_missing_and_unexpected_keys(tmp_path):
    sd, _ = read_checkpoint(fixture("tiny_G_1.pth"))
    sd = dict(sd)
    del sd["enc_p.proj.bias"]
    sd["flow.flows.0.extra"] = torch.zeros(3)
    with pytest.raises(ModelLoadError) as exc:
        load_vosk_checkpoint(_save(tmp_path, sd), fixture("tiny_config.json"))
    assert "missing keys: enc_p.proj.bias" in str(exc.value)
    assert "unexpected keys: flow.flows.0.extra" in str(exc.value)


def test_other_architectures(tmp_path):
    sd, _ = read_checkpoint(fixture("tiny_G_1.pth"))
    hifigan = {k.replace("dec.subband_conv_post", "dec.conv_post"): v for k, v in sd.items()}
    with pytest.raises(ModelLoadError, match="another architecture.*HiFi-GAN"):
        load_vosk_checkpoint(_save(tmp_path, hifigan), fixture("tiny_config.json"))
    plain_flow = {k: v for k, v in sd.items() if ".pre_transformer." not in k}
    with pytest.raises(ModelLoadError, match="another architecture.*pre_conv2"):
        load_vosk_checkpoint(_save(tmp_path, plain_flow), fixture("tiny_config.json"))
    disc = {"discriminators.0.convs.0.weight": torch.zeros(2, 1, 3)}
    with pytest.raises(ModelLoadError, match="discriminator checkpoint"):
        load_vosk_checkpoint(_save(tmp_path, disc), fixture("tiny_config.json"))


def test_corrupt_checkpoints(tmp_path):
    trunc = tmp_path / "G_t.pth"
    trunc.write_bytes(fixture("tiny_G_1.pth").read_bytes()[:5000])
    with pytest.raises(ModelLoadError, match="not a readable PyTorch checkpoint"):
        load_vosk_checkpoint(trunc, fixture("tiny_config.json"))
    lst = tmp_path / "G_l.pth"
    torch.save([1, 2, 3], lst)
    with pytest.raises(ModelLoadError, match="expected a state dict"):
        load_vosk_checkpoint(lst, fixture("tiny_config.json"))
    sd, _ = read_checkpoint(fixture("tiny_G_1.pth"))
    sd = {k: v for k, v in sd.items() if k != "dec.conv_pre.weight_v"}
    with pytest.raises(ModelLoadError, match="weight norm of dec.conv_pre: found only the magnitude"):
        load_vosk_checkpoint(_save(tmp_path, sd), fixture("tiny_config.json"))
    with pytest.raises(ModelLoadError, match="checkpoint not found"):
        load_vosk_checkpoint(tmp_path / "nope.pth", fixture("tiny_config.json"))


# --------------------------------------------------------------------------- synthesizers, CLI
@pytest.fixture(scope="module")
def preset():
    import vitsq

    return vitsq.load("vosk-ru-multi")


def test_preset_is_labelled_untrained(preset):
    from vitsq.registry import UNTRAINED

    d = preset.describe()
    assert d["weights"] == UNTRAINED == "untrained (random weights)"
    assert (d["arch"], d["decoder"], d["speakers"], d["symbols"], d["language"]) == ("vits2", "mb_istft", 200, 62, "ru")
    assert d["parameters"]["total"] == 31_876_379
    assert "33.23 M" in d["note_parameters"] and "41.97 M" in d["note_parameters"]


def test_preset_synthesizes_deterministically(preset):
    a = preset.synthesize("Привет, мир.", speaker=3, seed=5)
    b = preset.synthesize("Привет, мир.", speaker=3, seed=5)
    c = preset.synthesize("Привет, мир.", speaker=4, seed=5)
    assert a.sample_rate == 22050 and len(a.samples) > 0 and len(a.samples) % 256 == 0
    assert np.isfinite(a.samples).all() and 0 < np.abs(a.samples).max() < 1
    assert np.array_equal(a.samples, b.samples)
    assert len(a.samples) != len(c.samples) or not np.array_equal(a.samples, c.samples)
    ids = preset.text_to_ids("Привет, мир.")
    assert ids == [RussianFrontend().utterance_ids("Привет, мир.")]


def test_preset_bad_input(preset):
    import vitsq

    with pytest.raises(InputError, match="speaker 200 out of range.*0..199"):
        preset.synthesize("Привет.", speaker=200)
    with pytest.raises(InputError, match="Latin letters only"):
        preset.synthesize("Hello world")
    with pytest.raises(UnsupportedError, match="torch backend"):
        vitsq.load("vosk-ru-multi", backend="onnx")


def test_checkpoint_synthesizer_equals_model(tiny):
    import vitsq

    s = vitsq.load(str(fixture("tiny_G_1.pth")), config_path=fixture("tiny_config.json"))
    assert s.num_speakers == 4 and s.describe()["weights"] == "trained"
    assert s.describe()["dropped_training_only"]["enc_q"] > 0
    audio = s.synthesize("Съешь ещё этих булок.", speaker=2, seed=7, noise_scale=0.5, noise_w=0.6)
    ids = RussianFrontend().utterance_ids("Съешь ещё этих булок.")
    with torch.no_grad():
        out = tiny[0].infer(torch.tensor([ids]), torch.tensor([len(ids)]), torch.tensor([2]), noise_scale=0.5,
                            length_scale=1.0, noise_w=0.6, generator=[torch.Generator().manual_seed(7)])
    np.testing.assert_allclose(audio.samples, out.audio[0, 0].numpy(), rtol=0, atol=1e-6)
    with pytest.raises(InputError, match="speaker 4 out of range"):
        s.synthesize("да", speaker=4)


def test_cli_synth_and_info(tmp_path, capsys):
    from vitsq.cli import main

    wav = tmp_path / "x.wav"
    assert main(["synth", "vosk-ru-multi", "Привет, мир.", "--speaker", "3", "-o", str(wav)]) == 0
    out = capsys.readouterr().out
    assert wav.stat().st_size > 1000 and "untrained (random weights)" in out
    assert main(["info", "vosk-ru-multi"]) == 0
    out = capsys.readouterr().out
    assert "untrained (random weights)" in out and "31,876,379" in out and "33.23 M" in out
    for name in ("enc_p", "dec", "flow", "dp", "emb_g"):
        assert f"  {name} " in out
    bad = tmp_path / "bad.wav"  # a new path: an existing one is refused before the speaker is checked
    assert main(["synth", "vosk-ru-multi", "Привет", "--speaker", "300", "-o", str(bad)]) == 2
    assert "out of range" in capsys.readouterr().err and not bad.exists()


def test_cli_checkpoint_with_config(tmp_path, capsys):
    from vitsq.cli import main

    (tmp_path / "G_1.pth").write_bytes(fixture("tiny_G_1.pth").read_bytes())
    wav = tmp_path / "y.wav"
    assert main(["synth", str(tmp_path / "G_1.pth"), "Привет.", "--config", str(fixture("tiny_config.json")),
                 "-o", str(wav)]) == 0
    assert wav.is_file()
    other = tmp_path / "z.wav"  # a new path: an existing one is refused before the model is read
    assert main(["synth", str(tmp_path / "G_1.pth"), "Привет.", "-o", str(other)]) == 2
    assert "--config" in capsys.readouterr().err and not other.exists()


# --------------------------------------------------------------------------- Vosk model folder
def _identity_tts_onnx(path: Path, with_bert: bool = False) -> None:
    """A graph with the Vosk I/O contract whose audio is the input ids as floats [1, 1, T]."""
    import onnx
    from onnx import TensorProto, helper

    inputs = [helper.make_tensor_value_info("input", TensorProto.INT64, [1, None]),
              helper.make_tensor_value_info("input_lengths", TensorProto.INT64, [1]),
              helper.make_tensor_value_info("scales", TensorProto.FLOAT, [3]),
              helper.make_tensor_value_info("sid", TensorProto.INT64, [1])]
    if with_bert:
        inputs.append(helper.make_tensor_value_info("bert", TensorProto.FLOAT, [1, 768, None]))
    out = helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 1, None])
    emb = helper.make_tensor("emb_g.weight", TensorProto.FLOAT, [5, 2], [0.0] * 10)
    nodes = [helper.make_node("Cast", ["input"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("Unsqueeze", ["f", "axes"], ["output"])]
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    graph = helper.make_graph(nodes, "tts", inputs, [out], initializer=[axes, emb])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))


def _vosk_folder(tmp_path: Path, **cfg_extra) -> Path:
    d = tmp_path / "vosk-model-tts-ru-test"
    d.mkdir()
    _identity_tts_onnx(d / "model.onnx", with_bert=cfg_extra.pop("bert_input", False))
    (d / "dictionary").write_bytes((Path(__file__).parent / "data/ru_dictionary.txt").read_bytes())
    cfg = {"phoneme_id_map": {s: list(v) for s, v in DEFAULT_PHONEME_ID_MAP.items()},
           "inference": {"noise_level": 0.7, "speech_rate": 1.25, "duration_noise_level": 0.6},
           "audio": {"sample_rate": 22050}, **cfg_extra}
    (d / "config.json").write_text(json.dumps(cfg, ensure_ascii=False), encoding="utf-8")
    return d


def test_vosk_folder_onnx_backend(tmp_path):
    import vitsq

    folder = _vosk_folder(tmp_path)
    s = vitsq.load(folder, backend="onnx")
    assert s.backend == "onnx" and s.num_speakers == 5 and s.language == "ru"
    assert (s.config.noise_scale, s.config.length_scale, s.config.noise_w) == (0.7, 0.8, 0.6)
    audio = s.synthesize("Замок, мир!", speaker=4)
    # the identity graph returns the ids it was fed: the folder's dictionary was used
    expected = RussianFrontend.from_files(folder / "dictionary").utterance_ids("Замок, мир!")
    assert audio.samples.tolist() == [float(i) for i in expected]
    with pytest.raises(InputError, match="speaker 5 out of range"):
        s.synthesize("да", speaker=5)
    with pytest.raises(UnsupportedError, match="onnx backend"):
        vitsq.load(folder, backend="torch")


def test_vosk_folder_bert_unsupported(tmp_path):
    import vitsq

    folder = _vosk_folder(tmp_path)
    (folder / "bert").mkdir()
    with pytest.raises(UnsupportedError, match="BERT"):
        vitsq.load(folder, backend="onnx")
    (tmp_path / "b").mkdir()
    folder2 = _vosk_folder(tmp_path / "b", bert_input=True)
    with pytest.raises(UnsupportedError, match="'bert' input"):
        vitsq.load(folder2, backend="onnx")


def test_vosk_folder_missing_files(tmp_path):
    import vitsq

    folder = _vosk_folder(tmp_path)
    (folder / "dictionary").unlink()
    with pytest.raises(ModelLoadError, match="no dictionary"):
        vitsq.load(folder, backend="onnx")
    (folder / "config.json").unlink()
    with pytest.raises(ModelLoadError, match="no config.json"):
        vitsq.load(folder, backend="onnx")


# --------------------------------------------------------------------------- padded batches
def _ragged_ids(n_vocab: int, lengths: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    for i, n in enumerate(lengths):
        x[i, :n] = torch.randint(1, n_vocab, (n,), generator=gen)
    return x, torch.tensor(lengths)


def _frames_and_mask(model, lengths: list[int], seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    y_lengths = torch.tensor(lengths)
    y_mask = (torch.arange(max(lengths))[None] < y_lengths[:, None]).float().unsqueeze(1)  # [B, 1, T]
    z = torch.randn(len(lengths), model.config.inter_channels, max(lengths), generator=gen) * y_mask
    return z, y_mask, y_lengths


def test_padded_batch_items_equal_unbatched_runs(tiny):
    """5 and 60 tokens in one padded batch (noise on, one seed per item) = each item alone."""
    model, _ = tiny
    lengths, sids, seeds = [5, 60, 23], [0, 3, 1], [11, 12, 13]
    x, x_lengths = _ragged_ids(model.config.n_vocab, lengths)
    kw = dict(noise_scale=0.667, length_scale=1.0, noise_w=0.8)
    with torch.no_grad():
        batch = model.infer(x, x_lengths, torch.tensor(sids),
                            generator=[torch.Generator().manual_seed(s) for s in seeds], **kw)
        for i, n in enumerate(lengths):
            alone = model.infer(x[i : i + 1, :n], x_lengths[i : i + 1], torch.tensor(sids[i : i + 1]),
                                generator=[torch.Generator().manual_seed(seeds[i])], **kw)
            m = int(alone.audio_lengths[0])
            assert int(batch.audio_lengths[i]) == m
            ref = alone.audio[0, 0, :m]
            assert (batch.audio[i, 0, :m] - ref).abs().max() <= 1e-5 * ref.abs().max(), f"item {i}"
            assert torch.all(batch.audio[i, 0, m:] == 0)
            sub = alone.extra["audio_subbands"][0]
            assert (batch.extra["audio_subbands"][i, :, : sub.shape[-1]] - sub).abs().max() <= 1e-5 * sub.abs().max()


@pytest.mark.parametrize("which", ["tiny", "full"])
def test_masked_decoder_equals_items_alone(tiny, full_cfg_json, which):
    """The traceable path (``vocode(z, g, y_mask)``, one batch): every conv, the iSTFT and the
    PQMF see zeros after each item's end, as alone; items of 1, 7 and 40 frames."""
    if which == "tiny":
        model = tiny[0]
    else:  # the full Vosk architecture and widths, seeded random weights
        torch.manual_seed(0)
        model = VITS2(VitsConfig.from_vosk_json(full_cfg_json)).eval()
    lengths = [7, 40, 1]
    z, y_mask, _ = _frames_and_mask(model, lengths)
    g = model.speaker_embedding(torch.tensor([0, 2, 1]), 3)
    with torch.no_grad():
        audio, extra = model.vocode(z, g, y_mask)
        leaky, _ = model.vocode(z, g)  # unmasked: the padding reaches the shorter items
        assert torch.isfinite(audio).all() and torch.isfinite(extra["audio_subbands"]).all()
        for i, n in enumerate(lengths):
            ref, ref_extra = model.vocode(z[i : i + 1, :, :n], g[i : i + 1])
            m, peak = ref.shape[-1], ref.abs().max()
            assert (audio[i, :, :m] - ref[0]).abs().max() <= 1e-5 * peak, f"item {i} ({n} frames)"
            assert torch.all(audio[i, :, m:] == 0)
            sub = ref_extra["audio_subbands"][0]
            assert (extra["audio_subbands"][i, :, : sub.shape[-1]] - sub).abs().max() <= 1e-5 * sub.abs().max()
            if n < max(lengths):
                assert (leaky[i, :, :m] - ref[0]).abs().max() > 1e-3 * peak


def test_masked_decoder_exports_to_onnx_with_dynamic_batch(tiny, tmp_path):
    """The mask is plain tensor ops: traced once, the graph masks other batch sizes and lengths."""
    import onnxruntime as ort

    model = tiny[0]

    class Dec(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.dec = model.dec

        def forward(self, z, y_mask):
            return self.dec(z * y_mask, None, y_mask)[0]

    z, y_mask, _ = _frames_and_mask(model, [6, 3])
    path = tmp_path / "dec.onnx"
    torch.onnx.export(Dec().eval(), (z, y_mask), str(path), dynamo=False, opset_version=17,
                      input_names=["z", "y_mask"], output_names=["audio"],
                      dynamic_axes={"z": {0: "b", 2: "t"}, "y_mask": {0: "b", 2: "t"}, "audio": {0: "b", 2: "s"}})
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    lengths = [9, 30, 2]
    z, y_mask, _ = _frames_and_mask(model, lengths, seed=1)
    (audio,) = sess.run(None, {"z": z.numpy(), "y_mask": y_mask.numpy()})
    with torch.no_grad():
        for i, n in enumerate(lengths):
            ref = model.vocode(z[i : i + 1, :, :n], None)[0][0, 0].numpy()
            assert np.abs(audio[i, 0, : len(ref)] - ref).max() <= 1e-5 * np.abs(ref).max()
            assert np.all(audio[i, 0, len(ref):] == 0)
