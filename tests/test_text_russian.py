"""Russian front-end: equal ids to the ``vosk-tts`` runtime (PyPI package as oracle), bad input.

The oracle is a real ``vosk_tts.Model`` loaded from a folder made in the test: our dictionary
file, a ``config.json`` with the 62-symbol ``phoneme_id_map``, and a one-node ``model.onnx``
(``g2p_noembed`` never runs the network, but ``Model`` opens it). So the runtime's own
dictionary parser and ``Synth.g2p_noembed`` produce the expected ids.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from vitsq.errors import InputError, ModelLoadError
from vitsq.text.russian import (
    DEFAULT_PHONEME_ID_MAP,
    DEFAULT_SYMBOLS,
    RussianFrontend,
    load_dictionary,
    rule_phonemes,
)

DATA = Path(__file__).resolve().parent / "data"


def _lines(name: str) -> list[str]:
    return [
        ln for ln in (DATA / name).read_text(encoding="utf-8").splitlines()
        if ln.strip() and not ln.startswith("#")
    ]


WORDS = _lines("ru_words.txt")
SENTENCES = _lines("ru_sentences.txt")


def _tiny_onnx(path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    inp = helper.make_tensor_value_info("input", TensorProto.INT64, [1, None])
    out = helper.make_tensor_value_info("output", TensorProto.INT64, [1, None])
    graph = helper.make_graph([helper.make_node("Identity", ["input"], ["output"])], "g", [inp], [out])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("vosk_model")
    (d / "dictionary").write_bytes((DATA / "ru_dictionary.txt").read_bytes())
    cfg = {"phoneme_id_map": {s: list(v) for s, v in DEFAULT_PHONEME_ID_MAP.items()},
           "inference": {}}
    (d / "config.json").write_text(json.dumps(cfg, ensure_ascii=False), encoding="utf-8")
    _tiny_onnx(d / "model.onnx")
    return d


@pytest.fixture(scope="module")
def oracle(model_dir):
    from vosk_tts.model import Model
    from vosk_tts.synth import Synth

    model = Model(model_path=str(model_dir))
    assert model.tokenizer is None  # the no-BERT path
    synth = Synth(model)

    def ids(text: str) -> list[int]:
        # what Synth.synth_audio does before g2p_noembed
        return synth.g2p_noembed(re.sub("—", "-", text.strip()))

    return ids


@pytest.fixture(scope="module")
def frontend(model_dir) -> RussianFrontend:
    cfg = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    return RussianFrontend.from_files(model_dir / "dictionary", cfg["phoneme_id_map"])


def test_data_size():
    assert len(WORDS) >= 250 and len(SENTENCES) >= 120


def test_words_match_vosk_runtime(frontend, oracle):
    mismatches = [(w, frontend.utterance_ids(w), oracle(w)) for w in WORDS
                  if frontend.utterance_ids(w) != oracle(w)]
    assert not mismatches, mismatches[:5]


def test_sentences_match_vosk_runtime(frontend, oracle):
    # sentences with «» „“ … and en dashes crash the runtime (unknown symbols); compare those
    # after our normalization, which the runtime then handles
    mismatches = []
    for s in SENTENCES:
        expected = oracle(RussianFrontend.normalize(s))
        got = frontend.utterance_ids(s)
        if got != expected:
            mismatches.append((s, got, expected))
    assert not mismatches, mismatches[:3]
    plain = [s for s in SENTENCES if RussianFrontend.normalize(s) == s.strip().replace("—", "-")]
    assert len(plain) > 100  # most sentences need no normalization at all


def test_rules_only_match_runtime_for_dictionary_words(oracle):
    # without the dictionary our rules must still equal the runtime rules: compare with words
    # that are absent from the test dictionary but written with the same letters
    rules_only = RussianFrontend()
    for w in ("привет", "мир", "ёлка"):
        assert rules_only.utterance_ids(w + "ы") == oracle(w + "ы")


def test_structure_blanks_and_punctuation(frontend):
    phon = frontend.phonemize("Привет,  мир!")
    assert phon == ["^", "p", "rj", "i0", "vj", "e1", "t", ",", " ", " ", "mj", "i1", "r", "!", "$"]
    ids = frontend.utterance_ids("Привет,  мир!")
    assert ids[0::2] == [DEFAULT_PHONEME_ID_MAP[p][0] for p in phon]
    assert set(ids[1::2]) == {0} and len(ids) == 2 * len(phon) - 1


def test_dictionary_highest_probability_wins(frontend):
    assert frontend.phonemize("замок")[1:-1] == ["z", "a1", "m", "a0", "k"]  # 0.6 beats 0.4
    assert frontend.phonemize("мука")[1:-1] == ["m", "u1", "k", "a0"]  # tie: first wins
    assert frontend.phonemize("чтобы")[1:-1] == ["sh", "t", "o1", "b", "y0"]
    # probabilities <= 0 never win (as in the runtime): rules are used
    assert frontend.phonemize("нет")[1:-1] == rule_phonemes("нет") == ["nj", "e0", "t"]


def test_rules():
    assert rule_phonemes("прив+ет") == ["p", "rj", "i0", "vj", "e1", "t"]
    assert rule_phonemes("ёлка") == ["j", "o0", "l", "k", "a0"]  # ё is not auto-stressed
    assert rule_phonemes("съезд") == ["s", "j", "e0", "z", "d"]  # j after ъ
    assert rule_phonemes("семья") == ["sj", "e0", "mj", "j", "a0"]  # palatalized before ь, j after
    assert rule_phonemes("щука") == ["sch", "u0", "k", "a0"]
    assert rule_phonemes("кто-то") == ["k", "t", "o0", "t", "o0"]  # hyphen is silent
    assert rule_phonemes("из-за") == ["i0", "z", "z", "a0"]
    assert rule_phonemes("по-ёжиному")[:4] == ["p", "o0", "j", "o0"]  # hyphen starts a syllable
    assert rule_phonemes("шить") == ["sh", "i0", "tj"]  # ш has no soft variant


def test_case_and_yo(frontend):
    assert frontend.utterance_ids("ЁЛКА") == frontend.utterance_ids("ёлка")
    assert frontend.utterance_ids("Москва") == frontend.utterance_ids("москва")
    # ё and е are different words for the dictionary: "елка" is listed, "ёлка" too
    assert frontend.phonemize("елка") == frontend.phonemize("ёлка")
    assert frontend.phonemize("ёжик") != frontend.phonemize("ежик")


def test_hyphens_and_dashes(frontend):
    assert "-" in frontend.phonemize("да - нет")
    assert frontend.phonemize("да — нет") == frontend.phonemize("да - нет")
    assert frontend.phonemize("да – нет") == frontend.phonemize("да - нет")
    assert "-" not in frontend.phonemize("кто-то")


def test_normalization(frontend):
    assert frontend.phonemize("«да»") == frontend.phonemize('"да"')
    assert frontend.phonemize("да…") == frontend.phonemize("да...")
    assert frontend.phonemize("да\tнет") == frontend.phonemize("да нет")
    assert frontend.phonemize("  да  ") == frontend.phonemize("да")


def test_lines_are_utterances(frontend):
    assert frontend.text_to_ids("привет\n\nмир\n") == [frontend.utterance_ids("привет"),
                                                       frontend.utterance_ids("мир")]


def test_model_id_map_is_used():
    # a map with other ids (and list values) changes the ids
    shifted = {s: [i + 100] for s, (i,) in DEFAULT_PHONEME_ID_MAP.items()}
    fe = RussianFrontend(phoneme_id_map=shifted)
    assert fe.utterance_ids("да") == [101, 0, 120, 0, 114, 0, 102]
    assert RussianFrontend().utterance_ids("да") == [1, 0, 20, 0, 14, 0, 2]
    assert len(DEFAULT_SYMBOLS) == 62 and DEFAULT_SYMBOLS.index("zj") == 61


def test_frontend_from_vosk_config():
    from vitsq.models.config import VitsConfig
    from vitsq.text import make_frontend

    cfg = VitsConfig(arch="vits2", decoder="mb_istft", flow_type="pre_conv2", subbands=4, upsample_rates=(4, 4),
                     upsample_kernel_sizes=(16, 16), n_vocab=62, phoneme_type="vosk_ru", language="ru",
                     phoneme_id_map={s: (i,) for s, (i,) in DEFAULT_PHONEME_ID_MAP.items()})
    fe = make_frontend(cfg, dictionary=str(DATA / "ru_dictionary.txt"))
    assert fe.language == "ru"
    assert fe.phonemize("замок")[1:-1] == ["z", "a1", "m", "a0", "k"]  # dictionary path was read
    assert fe.text_to_ids("да") == [[1, 0, 20, 0, 15, 0, 2]]  # dictionary: d a1
    assert RussianFrontend(cfg.replace(add_blank=False)).utterance_ids("да") == [1, 20, 14, 2]


@pytest.mark.parametrize(
    "text, words",
    [
        ("hello world", ["Latin letters only", "Russian model"]),
        ("Hello", ["Latin letters only"]),
        ("привет, world", ["Latin letters", "world", "Cyrillic"]),
        ("мне 25 лет", ["digits", "25", "words"]),
        ("цена 5%", ["digits"]),
        ("привет & пока", ["unsupported characters", "&"]),
        ("привіт", ["unsupported characters", "і"]),
        ("", ["empty"]),
        ("   \n ", ["empty"]),
        ("...", ["no Russian letters"]),
        ("да\0нет", ["U+0000 (NUL)", "position 2"]),
        ("да\ud800", ["lone surrogate U+D800", "position 2"]),
    ],
)
def test_bad_text(frontend, text, words):
    with pytest.raises(InputError) as exc:
        frontend.text_to_ids(text) if not text.strip() else frontend.utterance_ids(text)
    for w in words:
        assert w in str(exc.value)


def test_unknown_dictionary_phoneme_is_an_error():
    fe = RussianFrontend(dictionary={"слово": ("s", "l", "xx")})
    with pytest.raises(InputError, match="'xx' is not in the model's phoneme_id_map"):
        fe.utterance_ids("слово")


@pytest.mark.parametrize(
    "content, lineno, what",
    [
        ("да 1.0 d a1\nнет 1.0\n", 2, "expected 'word probability phoneme"),
        ("да 1.0 d a1\n\nнет abc nj e1 t\n", 3, "not a finite number"),
        ("да nan d a1\n", 1, "not a finite number"),
        ("да\n", 1, "expected"),
    ],
)
def test_bad_dictionary_line(tmp_path, content, lineno, what):
    p = tmp_path / "dictionary"
    p.write_text(content, encoding="utf-8")
    with pytest.raises(ModelLoadError) as exc:
        load_dictionary(p)
    assert f"{p}:{lineno}:" in str(exc.value) and what in str(exc.value)


def test_dictionary_missing_and_not_utf8(tmp_path):
    with pytest.raises(ModelLoadError, match="cannot read"):
        load_dictionary(tmp_path / "nope")
    p = tmp_path / "dictionary"
    p.write_bytes("да 1.0 d a1\n".encode("cp1251"))
    with pytest.raises(ModelLoadError, match="not UTF-8"):
        load_dictionary(p)


def test_long_line_is_split_within_the_token_cap(frontend):
    from vitsq.limits import MAX_TOKENS_PER_UTTERANCE

    line = "замок стоит на холме, молоко в кувшине. " * 120
    utts = frontend.text_to_ids(line)
    assert len(utts) > 3 and all(len(u) <= MAX_TOKENS_PER_UTTERANCE for u in utts)
    assert sum(len(u) for u in utts) > 0.95 * len(frontend.utterance_ids(line))  # only cut spaces lost
