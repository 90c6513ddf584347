"""Web app streaming (POST /api/stream): frames, equality with the whole clip, the same checks
as /api/synthesize, a client that goes away stops the work, and a real browser playing the
audio as it arrives."""

from __future__ import annotations

import io
import json
import socket
import struct
import threading
import time

import numpy as np
import pytest
import soundfile as sf
from conftest import assert_same_16bit

from test_serve import _running, _wait, browser  # noqa: F401 - browser: the shared Chromium fixture
from vitsq.serve.app import STREAM_MEDIA_TYPE, create_app, load_models

SENTENCE = "The weather is lovely today."
TWO = "Hello there. Yes."


class Watched:
    """Delegates to a real synthesizer; counts the streams it opens and closes, the chunks they
    produce, and its synthesize calls (a refused request must make none)."""

    def __init__(self, inner):
        self._inner = inner
        self.opened = self.closed = self.produced = self.calls = 0
        self._lock = threading.Lock()

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def synthesize(self, *a, **k):
        self.calls += 1
        return self._inner.synthesize(*a, **k)

    def stream(self, *a, **k):
        inner = self._inner.stream(*a, **k)
        self.opened += 1

        def chunks():
            try:
                for c in inner:
                    with self._lock:
                        self.produced += 1
                    yield c
            finally:
                inner.close()
                self.closed += 1

        return chunks()

    def counts(self):
        return self.opened, self.closed, self.produced, self.calls


class NoStream:
    """A synthesizer-like object without stream(): the server sends its whole clip as one chunk."""

    def __init__(self, inner, fail=False):
        self._inner, self.fail = inner, fail
        self.name, self.backend = "nostream", "torch"
        self.sample_rate, self.num_speakers, self.language = inner.sample_rate, inner.num_speakers, inner.language
        self.config = inner.config

    def text_to_ids(self, text):
        return self._inner.text_to_ids(text)

    def synthesize(self, *a, **k):
        if self.fail:
            raise RuntimeError("simulated kernel crash")
        return self._inner.synthesize(*a, **k)

    def size_bytes(self):
        return 42

    def describe(self):
        return {"weights": "trained"}


def frames(data: bytes) -> list[tuple[dict, bytes]]:
    """Parse the documented format: [uint32 LE n][n bytes JSON header][header['bytes'] payload]."""
    out, pos = [], 0
    while pos < len(data):
        assert len(data) - pos >= 4, "truncated frame length"
        (n,) = struct.unpack_from("<I", data, pos)
        head = json.loads(data[pos + 4 : pos + 4 + n].decode("utf-8"))
        payload = data[pos + 4 + n : pos + 4 + n + head["bytes"]]
        assert len(payload) == head["bytes"], "truncated payload"
        out.append((head, payload))
        pos += 4 + n + head["bytes"]
    return out


def pcm_of(parsed, variant) -> np.ndarray:
    return np.concatenate([np.frombuffer(p, "<i2") for h, p in parsed if h["type"] == "chunk" and h["variant"] == variant])


def clip_of(client_or_url, result) -> np.ndarray:
    """The non-streamed endpoint's clip of one result, as 16-bit samples."""
    if isinstance(client_or_url, str):
        import httpx

        r = httpx.get(client_or_url + result["audio_url"], timeout=30)
    else:
        r = client_or_url.get(result["audio_url"])
    assert r.status_code == 200
    data, _ = sf.read(io.BytesIO(r.content), dtype="int16")
    return data


@pytest.fixture(scope="module")
def watched(joe_torch):
    return Watched(joe_torch)


@pytest.fixture(scope="module")
def watched2(joe_torch):
    return Watched(joe_torch)


@pytest.fixture(scope="module")
def entries(watched, watched2, joe_onnx, joe_torch):
    return load_models([("joe · torch", watched), ("joe · onnx", joe_onnx), ("second", watched2),
                        ("whole", NoStream(joe_torch)), ("broken", NoStream(joe_torch, fail=True))])


@pytest.fixture(scope="module")
def client(entries):
    from fastapi.testclient import TestClient

    app = create_app(entries, max_chars=200, workers=2)
    with TestClient(app, base_url="http://127.0.0.1") as c:
        yield c


# ----------------------------------------------------------------------------- format and equality
def test_stream_frames_equal_the_whole_clips(client):
    """Two variants in one stream (torch decodes chunk by chunk, ONNX Runtime one chunk per
    sentence), at zero noise so ONNX is comparable: each variant's chunks are its clip from
    /api/synthesize, and the frames say what the module docstring says."""
    body = {"text": TWO, "variants": ["joe-torch", "joe-onnx"], "noise_scale": 0, "noise_w": 0, "seed": 5}
    r = client.post("/api/stream", json=body)
    assert r.status_code == 200 and r.headers["content-type"] == STREAM_MEDIA_TYPE
    parsed = frames(r.content)
    kinds = [(h["type"], h.get("variant")) for h, _ in parsed]
    assert kinds[0] == ("start", "joe-torch") and kinds[-1] == ("done", None)
    assert kinds.index(("end", "joe-torch")) < kinds.index(("start", "joe-onnx"))  # one after another
    ts = [h["t"] for h, _ in parsed]
    assert ts == sorted(ts)
    whole = client.post("/api/synthesize", json=body).json()["results"]
    for variant, ref in zip(("joe-torch", "joe-onnx"), whole):
        chunks = [h for h, _ in parsed if h["type"] == "chunk" and h["variant"] == variant]
        assert [c["index"] for c in chunks] == list(range(len(chunks)))
        assert [c["offset"] for c in chunks] == [0] + list(np.cumsum([c["samples"] for c in chunks[:-1]]))
        assert sum(c["sentence_end"] for c in chunks) == 2 and chunks[-1]["sentence_end"]
        assert {c["sentence"] for c in chunks} == {0, 1}
        start = next(h for h, _ in parsed if h["type"] == "start" and h["variant"] == variant)
        end = next(h for h, _ in parsed if h["type"] == "end" and h["variant"] == variant)
        assert start["sample_rate"] == 22050 and start["seeded"] == (variant == "joe-torch")
        m = end["metrics"]
        assert m["ttfa_seconds"] == chunks[0]["ready_seconds"] and m["total_seconds"] == chunks[-1]["ready_seconds"]
        assert m["chunks"] == len(chunks) and m["tokens"] > 10 and m["frontend_seconds"] > 0
        pcm = pcm_of(parsed, variant)
        assert m["duration_seconds"] == pytest.approx(len(pcm) / 22050)
        assert_same_16bit(pcm, clip_of(client, ref))
    torch_chunks = sum(1 for h, _ in parsed if h["type"] == "chunk" and h["variant"] == "joe-torch")
    onnx_chunks = sum(1 for h, _ in parsed if h["type"] == "chunk" and h["variant"] == "joe-onnx")
    assert start["streaming"] == "sentences" and onnx_chunks == 2  # one per sentence
    assert torch_chunks >= 6  # default schedule: 8 frames, doubling: several per sentence


def test_schedule_is_the_libraries_and_may_be_longer_than_the_text(client, joe_torch):
    sizes = [3, 5] + [7] * 300  # far more chunks than the sentence has frames
    r = client.post("/api/stream", json={"text": "Hello there.", "variants": ["joe-torch"], "schedule": sizes, "seed": 2})
    parsed = frames(r.content)
    chunks = [h for h, _ in parsed if h["type"] == "chunk"]
    assert 5 < len(chunks) < 300 and chunks[1]["samples"] == 5 * 256 and chunks[2]["samples"] == 7 * 256
    assert_same_16bit(pcm_of(parsed, "joe-torch"), joe_torch.synthesize("Hello there.", seed=2).to_int16())


def test_failing_and_streamless_variants(client, joe_torch):
    """A variant that fails sends an error frame and the next still streams; a synthesizer
    without stream() sends its whole clip as one chunk."""
    r = client.post("/api/stream", json={"text": SENTENCE, "variants": ["broken", "whole"], "seed": 1})
    parsed = frames(r.content)
    err = next(h for h, _ in parsed if h["type"] == "error")
    assert err["variant"] == "broken" and "simulated kernel crash" in err["error"]
    assert [h["type"] for h, _ in parsed if h.get("variant") == "whole"] == ["start", "chunk", "end"]
    assert parsed[-1][0]["type"] == "done"
    assert_same_16bit(pcm_of(parsed, "whole"), joe_torch.synthesize(SENTENCE, seed=1).to_int16())


def test_openapi_documents_the_stream(client):
    schema = client.get("/openapi.json").json()
    post = schema["paths"]["/api/stream"]["post"]
    assert STREAM_MEDIA_TYPE in post["responses"]["200"]["content"]
    props = schema["components"]["schemas"]["StreamRequest"]["properties"]
    assert {"text", "variants", "seed", "schedule"} <= set(props)


@pytest.mark.parametrize(
    "body, status, message",
    [
        ({"text": "x" * 201}, 413, "201 characters; this server's limit is 200"),
        ({"text": "   "}, 400, "text is empty"),
        ({"text": "Hi.", "variants": ["nope"]}, 400, "unknown variant 'nope': valid variants are joe-torch"),
        ({"text": "Hi.", "variants": []}, 400, "no variants selected"),
        ({"text": "Hi.", "speaker": 5}, 400, "single speaker"),
        ({"text": "Hi.", "length_scale": 100}, 422, "over this server's limit of 10"),
        ({"text": "Hi.", "noise_w": -1}, 400, "noise_w=-1.0 is out of range"),
        ({"text": "Hi.", "schedule": 0}, 400, "chunk size must be an integer number of frames in 1..100000, got 0"),
        ({"text": "Hi.", "schedule": [8, -4]}, 400, "got -4"),
        ({"text": "Hi.", "schedule": []}, 400, "chunk sizes are empty"),
        ({"text": "Hi.", "schedule": "big"}, 422, "schedule"),
        ({"text": "and the cat sat on the mat " * 7, "length_scale": 10}, 413, "frames per utterance"),
        ({"variants": ["joe-torch"]}, 422, "text: Field required"),
    ],
)
def test_bad_stream_requests_are_refused_before_any_work(client, watched, body, status, message):
    before = watched.counts()
    r = client.post("/api/stream", json={"variants": ["joe-torch"], **body})
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json" and message in r.json()["error"]
    assert watched.counts() == before


# ----------------------------------------------------------------------------- cancellation
@pytest.fixture(scope="module")
def live(entries):
    app = create_app(entries, max_chars=200, workers=1)  # one worker: a stuck stream would block the next
    with _running(app) as port:
        yield app, port


def _wait_stopped(app, *synths, timeout=20.0):
    """Until every stream's worker has finished and every stream opened was closed."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not app.state.streams and all(s.opened == s.closed for s in synths):
            return
        time.sleep(0.02)
    raise AssertionError(f"streams still running: {len(app.state.streams)}; {[s.counts() for s in synths]}")


def _request_bytes(body: dict) -> bytes:
    payload = json.dumps(body).encode()
    return (f"POST /api/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n").encode() + payload


def test_disconnected_client_stops_the_work_and_others_are_served(live, watched, watched2, joe_torch):
    """1-frame chunks make a sentence over a hundred chunks. A client that reads the first chunk
    and closes (FIN), one that resets the connection (RST) before reading, and one that
    closes mid-way through a two-variant request: each stream is closed after a few chunks, the
    second variant never starts, the worker is freed, and the next request streams in full."""
    import httpx

    app, port = live
    url = f"http://127.0.0.1:{port}"
    body = {"text": SENTENCE, "variants": ["joe-torch"], "schedule": 1, "seed": 4}

    _wait_stopped(app, watched, watched2)
    o0, c0, p0, _ = watched.counts()
    with httpx.Client(timeout=30) as cl, cl.stream("POST", url + "/api/stream", json=body) as r:
        assert r.status_code == 200
        buf = b""
        for part in r.iter_bytes():
            buf += part
            if any(h["type"] == "chunk" for h, _ in _complete_frames(buf)):
                break  # leaving the block closes the connection mid-stream
    _wait_stopped(app, watched, watched2)
    after_fin = watched.produced - p0
    assert watched.opened == o0 + 1 and watched.closed == c0 + 1

    # reset before reading a byte of the answer
    p1 = watched.produced
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(_request_bytes(body))
        deadline = time.time() + 30
        while watched.produced == p1 and time.time() < deadline:  # until the stream has begun
            time.sleep(0.002)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = RST
    _wait_stopped(app, watched, watched2)
    after_rst = watched.produced - p1

    # mid-way through a two-variant request: the second variant never starts
    second_before = watched2.counts()
    two = {**body, "variants": ["joe-torch", "second"]}
    with httpx.Client(timeout=30) as cl, cl.stream("POST", url + "/api/stream", json=two) as r:
        buf = b""
        for part in r.iter_bytes():
            buf += part
            if sum(h["type"] == "chunk" for h, _ in _complete_frames(buf)) >= 3:
                break
    _wait_stopped(app, watched, watched2)
    assert watched2.counts() == second_before

    # the next request is served in full (default schedule: a few chunks)
    p2 = watched.produced
    r = httpx.post(url + "/api/stream", json={**body, "schedule": None}, timeout=60)
    parsed = frames(r.content)
    assert parsed[-1][0]["type"] == "done"
    assert watched.produced - p2 == sum(h["type"] == "chunk" for h, _ in parsed) > 1
    pcm = pcm_of(parsed, "joe-torch")
    assert_same_16bit(pcm, joe_torch.synthesize(SENTENCE, seed=4).to_int16())
    # 1-frame chunks: a whole stream has about one chunk per frame; a stopped one made a few
    frames_in_sentence = len(pcm) // 256
    assert frames_in_sentence > 100
    assert after_fin < frames_in_sentence // 4 and after_rst < frames_in_sentence // 4, (after_fin, after_rst)


def _complete_frames(body: bytes) -> list[tuple[dict, bytes]]:
    """The complete frames at the start of a partly received body."""
    out, p = [], 0
    while len(body) - p >= 4:
        (n,) = struct.unpack_from("<I", body, p)
        if len(body) - p < 4 + n:
            break
        head = json.loads(body[p + 4 : p + 4 + n])
        if len(body) - p < 4 + n + head["bytes"]:
            break
        out.append((head, body[p + 4 + n : p + 4 + n + head["bytes"]]))
        p += 4 + n + head["bytes"]
    return out


# ----------------------------------------------------------------------------- browser
@pytest.fixture(scope="module")
def live_page(joe_torch):
    with _running(create_app(load_models([("joe · torch", joe_torch)]), max_chars=200, workers=1)) as port:
        yield f"http://127.0.0.1:{port}"


@pytest.mark.slow
def test_browser_plays_the_stream_as_it_arrives(live_page, browser):  # noqa: F811 - the imported fixture
    """Real Chromium: the page scheduled the first chunk on the Web Audio clock and that clock had
    passed its start before the last chunk arrived (playback began while the stream was still
    coming); the PCM the page received equals the non-streamed clip in 16-bit; the card shows
    TTFA and total time; whole-clip mode still works."""
    import httpx
    from selenium.webdriver.common.by import By

    text = "Streaming speech starts playing right away."
    browser.get(live_page + "/")
    _wait(lambda: len(browser.find_elements(By.CSS_SELECTOR, "input.variant")) == 1, timeout=60)
    assert browser.find_element(By.ID, "stream").is_selected()  # streaming is the default
    box = browser.find_element(By.ID, "text")
    box.clear()
    box.send_keys(text)
    browser.find_element(By.ID, "seed").clear()
    browser.find_element(By.ID, "seed").send_keys("7")
    browser.find_element(By.ID, "synth").click()
    _wait(lambda: browser.execute_script("return window.__vitsq.state") in ("done", "error", "stopped"), timeout=90)
    assert browser.execute_script("return window.__vitsq.state") == "done", browser.find_element(By.ID, "error").text
    log = browser.execute_script("return window.__vitsq.log")
    chunks = [e for e in log if e["ev"] == "chunk"]
    assert len(chunks) >= 4 and [c["index"] for c in chunks] == list(range(len(chunks)))
    first, last = chunks[0], chunks[-1]
    assert first["state"] == "running"
    # the first chunk was scheduled to start right away, and the audio clock had passed that
    # start when the last chunk arrived: playback began before the stream ended
    assert first["when"] - first["ctx"] < 0.1
    assert last["ctx"] > first["when"], (first, last)
    assert last["t"] > first["t"]
    got = np.array(browser.execute_script("return Array.from(window.__vitsq.pcm['joe-torch'])"), dtype=np.int16)
    whole = httpx.post(live_page + "/api/synthesize", json={"text": text, "seed": 7}, timeout=60).json()
    assert_same_16bit(got, clip_of(live_page, whole["results"][0]))
    card = browser.find_element(By.CSS_SELECTOR, ".card")
    cells = {r.find_elements(By.TAG_NAME, "td")[0].text: r.find_elements(By.TAG_NAME, "td")[1].text
             for r in card.find_elements(By.CSS_SELECTOR, "table.m tr")}
    ttfa, total = float(cells["time to first audio (TTFA)"].split()[0]), float(cells["total time"].split()[0])
    assert 0 < ttfa < total and int(cells["chunks"]) == len(chunks)
    _wait(lambda: browser.execute_script("const a = document.querySelector('.card audio'); "
                                         "return a && a.readyState >= 1 && a.duration > 1"), timeout=30)
    # whole clips, as before streaming
    browser.find_element(By.ID, "stream").click()
    browser.find_element(By.ID, "synth").click()
    _wait(lambda: browser.execute_script("const a = document.querySelector('.card audio'); "
                                         "return a && a.src.includes('/api/audio/') && a.readyState >= 1 && a.duration > 1"),
          timeout=60)
    assert len(browser.find_elements(By.CSS_SELECTOR, "#history li")) == 2
