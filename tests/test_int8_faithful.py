"""The faithful ort-static preset (the default for VITS voices): INT8 that keeps the voice's timing.

``vitsq.quantize(joe, "ort-static")`` keeps the text encoder and the duration predictor FP32, so
its integer durations (the graph's ``durations`` output) must equal FP32 PyTorch's exactly, at
zero noise, on held-out sentences; and, with the decoder's full-rate stage float, speaker
similarity to FP32 stays high. The fast variant (``ort-static:fast``) is what the preset was
before: it moves durations (measured on joe: 40 of 40 evaluation sentences change length).
"""

from __future__ import annotations

import numpy as np
import pytest

import vitsq

N_SENTENCES = 4
#: The evaluation sentence with the lowest similarity on all 235 (every INT8 preset): 0.953 with
#: this calibration when the flow concatenated its pass-through halves as their INT8 copies
#: (``float_reads_float`` off), 0.986 with them float.
WORST = 144
#: Calibration sentences: few, to keep the test short. Durations do not depend on them (the
#: duration path is float); the similarity bound is set for this calibration.
CALIB = 4


@pytest.fixture(scope="module")
def faithful(joe_torch):
    return vitsq.quantize(joe_torch, "ort-static", calib=CALIB)


def _durations_and_audio(session, ids, length_scale):
    feed = {"input": np.array([ids], dtype=np.int64),  # [1, T]
            "input_lengths": np.array([len(ids)], dtype=np.int64),
            "scales": np.array([0.0, length_scale, 0.0], dtype=np.float32)}
    audio, durations, n = session.run(["output", "durations", "output_lengths"], feed)
    return durations.reshape(-1), audio.reshape(-1)[: int(n[0])]  # [T], [S]


def test_faithful_preset_keeps_durations_exact_and_the_voice(joe_torch, faithful, fp32_durations):
    """Held-out sentences, zero noise: every integer duration equals FP32's; speaker similarity
    (resemblyzer) to FP32 PyTorch stays high, on the split's worst sentence too. Measured with
    this 4-sentence calibration: 0.996 0.988 0.989 0.978, the worst sentence 0.986 (0.953 with
    the flow's pass-through halves INT8); the fast variant: 0 of 4 sentences keep their
    durations, so the duration assertion fails for it. (32-sentence
    calibrations, all 235 evaluation sentences: benchmarks/joe_report.)"""
    import onnx
    import onnxruntime as ort

    from vitsq.evaluate.metrics import SpeakerEncoder, cosine_similarity
    from vitsq.evaluate.sentences import load_split
    from vitsq.quantize.recipes import ORT_DURATION_PATH, best_for

    assert faithful.recipe == best_for(joe_torch, "ort-static", variant="faithful")
    path = faithful.build_dir / "model.onnx"
    graph = onnx.load(str(path)).graph
    dq_out = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    # really INT8 where it is meant to be, really FP32 on the duration path
    assert sum(n.op_type == "QuantizeLinear" for n in graph.node) > 50
    assert not [n.name for n in graph.node if n.name.startswith(ORT_DURATION_PATH) and set(n.input) & dq_out]
    # the flow's couplings are INT8, but the half each passes through is concatenated as float
    concats = [n for n in graph.node if n.name.startswith("/flow/flows.") and n.op_type == "Concat"]
    assert len(concats) == 4 and not [n.name for n in concats if set(n.input) & dq_out]
    assert any(n.op_type == "QuantizeLinear" and n.name.startswith("/flow/flows.0/enc/") for n in graph.node)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    length_scale = joe_torch.resolve().length_scale
    split = load_split("en", "evaluation")
    texts = list(split[:N_SENTENCES]) + [split[WORST]]
    encoder, sims, symbols = SpeakerEncoder(), [], 0
    for text in texts:
        (ids,) = joe_torch.text_to_ids(text)
        ref = joe_torch.synthesize_ids(ids, noise_scale=0.0, noise_w=0.0).samples
        got, audio = _durations_and_audio(session, ids, length_scale)
        np.testing.assert_array_equal(got, fp32_durations(ids), err_msg=text)
        symbols += len(ids)
        assert len(audio) == len(ref)
        sims.append(cosine_similarity(encoder.embed(ref, joe_torch.sample_rate),
                                      encoder.embed(audio, joe_torch.sample_rate)))
    assert symbols > 250  # the durations compared are many, not a handful
    assert not np.allclose(audio, ref, atol=1e-3)  # INT8 audio, not the float graph's
    assert np.mean(sims) >= 0.98 and min(sims) >= 0.97, sims


def test_preset_variants_name_the_recipe(joe_torch):
    """``ort-static`` = faithful for VITS voices, ``ort-static:fast`` / ``variant="fast"`` the
    speed-first preset; bad variants name the valid ones."""
    from vitsq.errors import UnsupportedError
    from vitsq.quantize.recipes import ORT_DURATION_PATH, best_for

    faithful, fast = best_for(joe_torch, "ort-static"), best_for(joe_torch, "ort-static:fast")
    assert faithful == best_for(joe_torch, "ort-static", variant="faithful")
    assert fast == best_for(joe_torch, "ort-static", variant="fast") != faithful
    assert set(ORT_DURATION_PATH) <= set(faithful.keep_float) and "/enc_p/" in fast.static_prefixes
    assert "/dec/ups.2/" in faithful.keep_float and "/dec/ups.2/" not in fast.keep_float
    with pytest.raises(UnsupportedError, match="valid choices are faithful, fast"):
        best_for(joe_torch, "ort-static:tiny")
    with pytest.raises(UnsupportedError, match="ort-static and pt2e have: faithful, fast"):
        best_for(joe_torch, "eager", variant="fast")


def test_pt2e_preset_variants(joe_torch):
    """``pt2e`` = faithful for VITS voices (text encoder and duration predictor left out of the
    INT8 stages, the decoder's tail float), ``pt2e:fast`` quantizes them too (the duration
    predictor's spline flows float); the VITS2 default stays the fast one."""
    from vitsq.errors import UnsupportedError
    from vitsq.quantize.pt2e import resolve_recipe
    from vitsq.quantize.recipes import PT2E_KEEP_FLOAT, PT2E_STAGES, PT2ERecipe, best_for, recipe_class

    faithful, fast = best_for(joe_torch, "pt2e"), best_for(joe_torch, "pt2e:fast")
    assert faithful == best_for(joe_torch, "pt2e", variant="faithful") == resolve_recipe(joe_torch.model, PT2ERecipe())
    assert faithful.stages == ("flow", "decoder") and faithful.keep_float == ("dec.stage2", "dec.conv_post")
    assert fast.stages == PT2E_STAGES and fast.keep_float == PT2E_KEEP_FLOAT
    # explicit stages with the duration predictor keep its spline flows float, as the fast preset
    assert resolve_recipe(joe_torch.model, PT2ERecipe(stages=("duration",))).keep_float == PT2E_KEEP_FLOAT
    vosk = vitsq.load("vosk-ru-multi").model
    assert best_for(vosk, "pt2e").stages == ("encoder", "flow", "decoder")
    assert best_for(vosk, "pt2e:faithful").stages == ("flow", "decoder")
    assert recipe_class("pt2e:fast") is PT2ERecipe
    with pytest.raises(UnsupportedError, match="pt2e preset variant 'tiny'.*valid choices are faithful, fast"):
        recipe_class("pt2e:tiny")
