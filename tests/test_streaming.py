"""Streaming synthesis on the PyTorch backend: chunks equal the whole-sentence synthesis."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import vitsq
from conftest import per_sentence_error
from vitsq.errors import InputError
from vitsq.streaming import AudioChunk, ChunkSchedule
from vitsq.streaming.decoder import StreamingDecoder

TEXT = "Streaming starts with a short chunk. Then the chunks grow! Does it still sound the same?"
SCHEDULES = [None, 1, [3, 5, 7], [2, 11], 100_000]


@pytest.fixture(scope="module")
def joe():
    return vitsq.load("joe", backend="torch")


def _joined(chunks: list[AudioChunk]) -> np.ndarray:
    return np.concatenate([c.samples for c in chunks])


@pytest.mark.parametrize("schedule", SCHEDULES, ids=str)
def test_fp32_stream_equals_synthesize(joe, schedule):
    reference = joe.synthesize(TEXT, seed=11).samples
    chunks = list(joe.stream(TEXT, seed=11, schedule=schedule))
    assert per_sentence_error(chunks, reference) < 1e-5
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert [c.offset for c in chunks] == list(np.cumsum([0] + [len(c.samples) for c in chunks[:-1]]))
    assert sum(c.sentence_end for c in chunks) == 3 and chunks[-1].sentence_end
    times = [c.ready_seconds for c in chunks]
    assert times == sorted(times) and times[0] > 0


def test_first_chunk_is_small_and_does_not_wait_for_later_sentences(joe):
    seen: list[str] = []
    frontend = joe.frontend

    class Counting:
        def text_to_ids(self, text):
            seen.append(text)
            return frontend.text_to_ids(text)

    joe.frontend = Counting()
    try:
        it = joe.stream(TEXT, schedule=ChunkSchedule(first=4))
        first = next(it)
        assert len(seen) == 1, "the first chunk waited for the front-end of later sentences"
        hop = 256
        assert 0 < len(first.samples) <= (4 + joe._decoder.lag_frames) * hop
        list(it)
        assert len(seen) == 3
    finally:
        joe.frontend = frontend


def test_sentence_pieces_give_the_ids_of_the_whole_text(joe):
    assert joe.text_to_ids(TEXT) == joe.frontend.text_to_ids(TEXT)


def test_closing_a_stream_stops_it(joe):
    it = joe.stream(TEXT * 3, schedule=4)
    next(it)
    it.close()
    with pytest.raises(StopIteration):
        next(it)


@pytest.mark.parametrize("bad", [0, -3, [4, 0], [], True, 2.5, "8", ChunkSchedule.__new__])
def test_bad_schedules_are_refused_before_any_work(joe, bad):
    with pytest.raises(InputError):
        joe.stream(TEXT, schedule=bad)


def test_bad_settings_are_refused_when_stream_is_called(joe):
    with pytest.raises(InputError, match="single speaker"):
        joe.stream(TEXT, speaker=3)
    with pytest.raises(InputError, match="empty"):
        joe.stream("   ")
    with pytest.raises(InputError, match="growth"):
        ChunkSchedule(growth=0.5)
    with pytest.raises(InputError, match="smaller than the first"):
        ChunkSchedule(first=64, largest=8)


def test_schedule_plans_cover_the_sentence():
    s = ChunkSchedule(first=3, growth=2, largest=10)
    assert [s.size(k) for k in range(5)] == [3, 6, 10, 10, 10]
    plan = s.plan(40, lag=5)
    assert plan[0] == 8 and sum(plan) == 40
    assert ChunkSchedule.build([2, 5]).plan(9, lag=1) == [3, 5, 1]
    assert ChunkSchedule.build(7).plan(3, lag=20) == [3]


# ----------------------------------------------------------------------------- decoder level
def _decode_in_chunks(model, z, schedule, g=None):
    dec = StreamingDecoder(model)
    states = dec.init_states(z)
    plan = ChunkSchedule.build(schedule).plan(z.shape[-1], dec.lag_frames)
    outs, pos = [], 0
    for k, n in enumerate(plan):
        y, states = dec.step(z[:, :, pos : pos + n], states, int(k == len(plan) - 1), g)
        outs.append(y)
        pos += n
    return torch.cat(outs, -1)


@pytest.mark.parametrize("schedule", [1, [5, 2, 9], None, 100_000], ids=str)
def test_vits2_decoder_streams_exactly(vosk_tiny, schedule):
    model = vosk_tiny.model
    z = torch.randn(1, model.config.inter_channels, 61, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        whole, _ = model.vocode(z, None)
        streamed = _decode_in_chunks(model, z, schedule)
    assert streamed.shape == whole.shape
    assert (streamed - whole).abs().max() < 1e-5 * whole.abs().max()


def test_vits2_tiny_stream_equals_synthesize(vosk_tiny):
    text = "Привет, как дела?\nХорошо."
    reference = vosk_tiny.synthesize(text, speaker=1, seed=5).samples
    chunks = list(vosk_tiny.stream(text, speaker=1, seed=5, schedule=[2, 3]))
    assert per_sentence_error(chunks, reference) < 1e-5


def test_vits2_full_config_decoder_streams_exactly():
    s = vitsq.load("vosk-ru-multi", backend="torch")
    z = torch.randn(1, s.config.inter_channels, 40, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        whole, _ = s.model.vocode(z, None)
        streamed = _decode_in_chunks(s.model, z, [1, 4, 7])
    assert (streamed - whole).abs().max() < 1e-5 * whole.abs().max()


@pytest.mark.parametrize("schedule", [1, [5, 2, 9], 100_000], ids=str)
def test_vits2_polyphase_decoder_streams_exactly(vosk_tiny, schedule):
    """The export-time copy (polyphase upsampling and PQMF) streams as the whole run."""
    from vitsq.models.polyphase import PolyphasePQMFSynthesis, with_polyphase_upsampling

    model = with_polyphase_upsampling(vosk_tiny.model)
    assert isinstance(model.dec.pqmf, PolyphasePQMFSynthesis)
    z = torch.randn(1, model.config.inter_channels, 61, generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        whole, _ = model.vocode(z, None)
        plain, _ = vosk_tiny.model.vocode(z, None)
        streamed = _decode_in_chunks(model, z, schedule)
    assert streamed.shape == whole.shape == plain.shape
    assert (streamed - whole).abs().max() < 1e-5 * whole.abs().max()
    assert (whole - plain).abs().max() < 1e-5 * plain.abs().max()


def test_polyphase_decoder_streams_exactly(joe):
    from vitsq.models.polyphase import with_polyphase_upsampling

    model = with_polyphase_upsampling(joe.model)
    z = torch.randn(1, joe.config.inter_channels, 50, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        whole, _ = model.vocode(z, None)
        streamed = _decode_in_chunks(model, z, [1, 6])
    assert (streamed - whole).abs().max() < 1e-5 * whole.abs().max()


# ----------------------------------------------------------------------------- INT8 (torch.ao)
def _eager_int8(synth):
    from vitsq.quantize.calibration import make_calibration
    from vitsq.quantize.recipes import best_for

    recipe = best_for(synth, "eager")
    return vitsq.quantize(synth, recipe, make_calibration(synth, n=3, recipe=recipe), progress=False).synth


@pytest.fixture(scope="module")
def joe_int8(joe):
    return _eager_int8(joe)


@pytest.mark.parametrize("schedule", [1, [3, 5, 7], None], ids=str)
def test_int8_stream_equals_synthesize_in_16_bit(joe_int8, schedule):
    text = "An eight bit voice streams too. Same samples!"
    reference = joe_int8.synthesize(text, seed=2).to_int16().astype(np.int32)
    streamed = np.concatenate([c.to_int16() for c in joe_int8.stream(text, seed=2, schedule=schedule)])
    assert streamed.shape == reference.shape
    # INT8 layers give the same integers; only float rounding may move a sample by one step
    assert np.abs(streamed.astype(np.int32) - reference).max() <= 1


def test_vits2_int8_stream_equals_synthesize_in_16_bit(vosk_tiny):
    int8 = _eager_int8(vosk_tiny)
    text = "Привет, как дела?"
    reference = int8.synthesize(text, speaker=2, seed=1).to_int16().astype(np.int32)
    streamed = np.concatenate([c.to_int16() for c in int8.stream(text, speaker=2, seed=1, schedule=[1, 2, 5])])
    assert streamed.shape == reference.shape
    assert np.abs(streamed.astype(np.int32) - reference).max() <= 1


@pytest.mark.parametrize("schedule", [1, [3, 5, 7]], ids=str)
def test_long_sentences_stream_the_flow_too(joe, monkeypatch, schedule):
    reference = joe.synthesize(TEXT, seed=11).samples
    monkeypatch.setattr(joe, "stream_flow_min_frames", 0)  # every sentence counts as long
    calls = []
    whole_flow = joe.model.flow_reverse
    monkeypatch.setattr(joe.model, "flow_reverse", lambda *a, **k: calls.append(1) or whole_flow(*a, **k))
    chunks = list(joe.stream(TEXT, seed=11, schedule=schedule))
    assert not calls, "the flow ran over the whole sentence"
    # the streamed flow's short convolutions round differently (oneDNN), amplified by the decoder
    assert per_sentence_error(chunks, reference) < 5e-5


def test_playback_stalls_counts_the_waits():
    from vitsq.streaming import playback_stalls

    def chunk(ready, seconds):
        return AudioChunk(np.zeros(int(seconds * 100), np.float32), 100, 0, 0, 0, ready)

    assert playback_stalls([chunk(0.1, 1.0), chunk(0.5, 1.0), chunk(2.0, 1.0)]) == (0.0, 0)
    stalled, gaps = playback_stalls([chunk(0.1, 0.2), chunk(0.5, 1.0), chunk(1.0, 1.0)])
    assert gaps == 1 and abs(stalled - 0.2) < 1e-9
