"""Web app: JSON API (models, synthesize, audio, errors, concurrency) and a real browser test."""

from __future__ import annotations

import contextlib
import io
import os
import re
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import soundfile as sf

from vitsq.errors import InputError
from vitsq.serve.app import check_host, create_app, load_models

SENTENCE = "The weather is lovely today."


class BrokenSynth:
    """Wraps a real synthesizer but fails at synthesis time (after loading fine)."""

    def __init__(self, inner):
        self._inner = inner
        self.name, self.backend = "broken", "torch"
        self.sample_rate, self.num_speakers, self.language = inner.sample_rate, inner.num_speakers, inner.language
        self.config = inner.config

    def text_to_ids(self, text):
        return self._inner.text_to_ids(text)

    def synthesize(self, *a, **k):
        raise RuntimeError("simulated kernel crash")

    def size_bytes(self):
        return 42

    def describe(self):
        return {"weights": "trained"}


@pytest.fixture(scope="module")
def entries(joe_torch, joe_onnx):
    return load_models([("joe · torch", joe_torch), ("joe · onnx", joe_onnx), ("broken", BrokenSynth(joe_torch))])


@pytest.fixture(scope="module")
def client(entries):
    from fastapi.testclient import TestClient

    app = create_app(entries, max_chars=200, workers=2)
    with TestClient(app, base_url="http://127.0.0.1") as c:
        yield c


def _wav(client, url):
    r = client.get(url)
    assert r.status_code == 200 and r.headers["content-type"] == "audio/wav"
    data, sr = sf.read(io.BytesIO(r.content), dtype="float32")
    return data, sr


# ----------------------------------------------------------------------------- API
def test_models_listed_by_id_without_paths(client):
    r = client.get("/api/models")
    assert r.status_code == 200
    data = r.json()
    ids = [m["id"] for m in data["models"]]
    assert ids == ["joe-torch", "joe-onnx", "broken"]
    assert data["max_chars"] == 200
    joe = data["models"][0]
    assert joe["sample_rate"] == 22050 and joe["speakers"] == 1 and joe["size_bytes"] > 10_000_000
    assert "/" not in r.text.replace("\\/", "")  # no file paths reach the page


def test_openapi_schema_documents_the_api(client):
    schema = client.get("/openapi.json").json()
    assert "/api/synthesize" in schema["paths"] and "post" in schema["paths"]["/api/synthesize"]
    assert "/api/models" in schema["paths"]
    props = schema["components"]["schemas"]["SynthesizeRequest"]["properties"]
    assert {"text", "variants", "speaker", "noise_scale", "length_scale", "noise_w", "seed"} <= set(props)


def test_synthesize_two_variants_same_seed_and_metrics(client, joe_torch):
    r = client.post("/api/synthesize", json={"text": SENTENCE, "variants": ["joe-torch", "joe-onnx"], "seed": 3})
    assert r.status_code == 200, r.text
    res = r.json()
    assert res["seed"] == 3 and [x["variant"] for x in res["results"]] == ["joe-torch", "joe-onnx"]
    for x in res["results"]:
        assert x["ok"], x["error"]
        m = x["metrics"]
        audio, sr = _wav(client, x["audio_url"])
        assert sr == 22050 and len(audio) > sr  # over a second of speech
        assert m["duration_seconds"] == pytest.approx(len(audio) / sr)
        assert m["rtf"] == pytest.approx(m["model_seconds"] / m["duration_seconds"])
        assert m["tokens"] > 10 and m["tokens_per_second"] > 0 and m["frontend_seconds"] > 0
        assert m["size_bytes"] > 10_000_000
        assert x["download_name"].endswith(".wav")
    # the torch card is exactly what the library gives for the same seed
    ref = joe_torch.synthesize(SENTENCE, seed=3)
    got, _ = _wav(client, res["results"][0]["audio_url"])
    np.testing.assert_allclose(got, ref.to_int16() / 32767.0, atol=1.5 / 32767)


def test_failing_variant_reports_error_others_still_play(client):
    r = client.post("/api/synthesize", json={"text": SENTENCE, "variants": ["broken", "joe-torch"]})
    assert r.status_code == 200
    broken, joe = r.json()["results"]
    assert broken["ok"] is False and "simulated kernel crash" in broken["error"] and "audio_url" not in broken
    assert joe["ok"] is True
    assert len(_wav(client, joe["audio_url"])[0]) > 0


@pytest.mark.parametrize(
    "body, status, message",
    [
        ({"text": "x" * 201, "variants": ["joe-torch"]}, 413, "201 characters; this server's limit is 200"),
        ({"text": "   ", "variants": ["joe-torch"]}, 400, "text is empty"),
        ({"text": "Hi.", "variants": ["nope"]}, 400, "unknown variant 'nope': valid variants are joe-torch, joe-onnx, broken"),
        ({"text": "Hi.", "variants": []}, 400, "no variants selected"),
        ({"text": "Hi.", "variants": ["joe-torch", "joe-torch"]}, 400, "selected twice"),
        ({"text": "Hi.", "variants": ["joe-torch"], "speaker": 5}, 400, "single speaker"),
        ({"text": "Hi.", "variants": ["joe-torch"], "length_scale": 0}, 400, "length_scale=0.0 is out of range"),
        ({"text": "Hi.", "variants": ["joe-torch"], "noise_w": -1}, 400, "noise_w=-1.0 is out of range"),
        ({"variants": ["joe-torch"]}, 422, "text: Field required"),
        ({"text": "Hi.", "seed": "abc"}, 422, "seed"),
    ],
)
def test_bad_requests_get_4xx_json_errors(client, body, status, message):
    r = client.post("/api/synthesize", json=body)
    assert r.status_code == status, r.text
    assert message in r.json()["error"]


def test_unknown_clip_is_404_json(client):
    r = client.get("/api/audio/deadbeef.wav")
    assert r.status_code == 404 and "not found" in r.json()["error"]


def test_concurrent_requests_do_not_corrupt_each_other(client, joe_torch):
    texts = ["One small step.", "The cat sat on the warm windowsill all afternoon.", "Yes.", "Call me tomorrow at noon."]
    jobs = [(t, seed) for seed in (1, 2) for t in texts]

    def call(job):
        text, seed = job
        r = client.post("/api/synthesize", json={"text": text, "variants": ["joe-torch"], "seed": seed})
        assert r.status_code == 200, r.text
        return r.json()

    with ThreadPoolExecutor(max_workers=8) as ex:
        results = list(ex.map(call, jobs))
    for (text, seed), res in zip(jobs, results):
        assert res["text"] == text and res["seed"] == seed
        got, _ = _wav(client, res["results"][0]["audio_url"])
        ref = joe_torch.synthesize(text, seed=seed).to_int16() / 32767.0
        np.testing.assert_allclose(got, ref, atol=1.5 / 32767)


def test_page_is_served_with_the_cap(client):
    r = client.get("/")
    assert r.status_code == 200 and "Synthesize" in r.text
    assert 'maxlength="200"' in r.text and "__MAX_CHARS__" not in r.text


def test_loopback_only_and_bad_specs():
    assert check_host("127.0.0.1") == "127.0.0.1"
    with pytest.raises(InputError, match="not a loopback address.*127.0.0.1"):
        check_host("0.0.0.0")
    with pytest.raises(InputError, match="unknown backend 'gpu'"):
        load_models(["joe@gpu"])
    with pytest.raises(InputError, match="max_chars must be in 1..20000"):
        create_app([("x", object())], max_chars=0)
    with pytest.raises(InputError, match="max_chars must be in 1..20000"):
        create_app([("x", object())], max_chars=20_001)


# ----------------------------------------------------------------------------- browser
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _running(app):
    """Serve ``app`` with uvicorn on a free loopback port in a thread; yield the port."""
    import uvicorn

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    try:
        yield port
    finally:
        server.should_exit = True
        t.join(timeout=10)


@pytest.fixture(scope="module")
def live_server(entries):
    with _running(create_app(entries, max_chars=200, workers=2)) as port:
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for a in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--disable-dev-shm-usage", "--autoplay-policy=no-user-gesture-required",
              "--window-size=1280,1000", f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        opts.add_argument(a)
    drv = webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"), options=opts)
    yield drv
    drv.quit()


def _wait(fn, timeout=180, every=0.25):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(every)
    raise AssertionError("timed out waiting for the page")


@pytest.mark.slow
def test_browser_synthesize_renders_playable_cards(live_server, browser):
    from selenium.webdriver.common.by import By

    browser.get(live_server + "/")
    _wait(lambda: len(browser.find_elements(By.CSS_SELECTOR, "input.variant")) == 3)
    # compare the two working variants
    for box in browser.find_elements(By.CSS_SELECTOR, "input.variant"):
        if box.get_attribute("value") == "broken" and box.is_selected():
            box.click()
    text = browser.find_element(By.ID, "text")
    text.clear()
    text.send_keys("Quantized voices should sound just like the original.")
    browser.find_element(By.ID, "synth").click()
    _wait(lambda: len(browser.find_elements(By.CSS_SELECTOR, ".card")) == 2)
    cards = browser.find_elements(By.CSS_SELECTOR, ".card")
    assert [c.get_attribute("data-variant") for c in cards] == ["joe-torch", "joe-onnx"]
    # every card's audio element loads and has a positive duration
    durations = _wait(lambda: (lambda d: d if all(x and x > 0.5 for x in d) else None)(browser.execute_script(
        "return [...document.querySelectorAll('.card audio')].map(a => a.readyState >= 1 ? a.duration : 0)")))
    assert len(durations) == 2
    for card in cards:
        cells = {r.find_elements(By.TAG_NAME, "td")[0].text: r.find_elements(By.TAG_NAME, "td")[1].text
                 for r in card.find_elements(By.CSS_SELECTOR, "table.m tr")}
        for key in ("RTF", "tokens", "tokens / s", "model time", "audio duration", "front-end (G2P) time"):
            num = cells[key].split()[0]
            assert float(num) > 0, (key, cells[key])
        assert card.find_element(By.CSS_SELECTOR, "a.download").get_attribute("download").endswith(".wav")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#history li")) == 1
    # the README screenshot, when asked for
    shot = os.environ.get("VITSQ_SCREENSHOT")  # e.g. docs/screenshot.png
    if shot:
        browser.save_screenshot(shot)

    # a failing variant shows its error in its card while the others play
    browser.find_element(By.CSS_SELECTOR, "input.variant[value=broken]").click()
    browser.find_element(By.ID, "synth").click()
    _wait(lambda: browser.find_elements(By.CSS_SELECTOR, ".card.failed"))
    assert "simulated kernel crash" in browser.find_element(By.CSS_SELECTOR, ".card.failed .err").text
    _wait(lambda: all(d and d > 0.5 for d in browser.execute_script(
        "return [...document.querySelectorAll('.card audio')].map(a => a.readyState >= 1 ? a.duration : 0)")))
    assert len(browser.find_elements(By.CSS_SELECTOR, ".card audio")) == 2

    # a 4xx error (text over the cap, bypassing maxlength from script) is shown on the page
    browser.execute_script("document.getElementById('text').value = 'a'.repeat(250)")
    browser.find_element(By.ID, "synth").click()
    err = _wait(lambda: browser.find_element(By.ID, "error").text)
    assert "limit is 200" in err


def test_model_info_never_carries_file_paths():
    from vitsq.serve.app import _no_paths

    q = {"recipe": "eager", "calibration": {"file": "/home/me/calib.txt", "sentences": 16},
         "keep_float": ["dec.ups.0", "./rel/path"], "win": "C:\\models\\x"}
    assert _no_paths(q) == {"recipe": "eager", "calibration": {"sentences": 16}, "keep_float": ["dec.ups.0"]}


# ----------------------------------------------------------------------------- work bounds
class CountingSynth:
    """Delegates to a real synthesizer and counts synthesis calls (the bounds must refuse first)."""

    def __init__(self, inner):
        self._inner = inner
        self.calls = 0

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def synthesize(self, *a, **k):
        self.calls += 1
        return self._inner.synthesize(*a, **k)


@pytest.fixture(scope="module")
def counting(joe_torch):
    return CountingSynth(joe_torch)


@pytest.fixture(scope="module")
def bounded(counting):
    """An app with the 20000-character cap, so the frame budget (not the text cap) is what refuses."""
    with _running(create_app(load_models([("joe · counted", counting)]), max_chars=20_000, workers=1)) as port:
        yield port


def _raw_request(port, head: bytes, chunks=(), timeout=20.0) -> tuple[int, dict, int]:
    """Send a request head (and body chunks, stopping when the server answers); return
    (status, JSON body, chunks sent before the answer)."""
    import json
    import select

    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(head)
        sent = 0
        for chunk in chunks:
            if select.select([s], [], [], 0)[0]:  # the server has answered: stop sending
                break
            try:
                s.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += 1
            time.sleep(0.002)
        data = b""
        while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < int(
                re.search(rb"content-length: (\d+)", data, re.I).group(1) if re.search(rb"content-length: (\d+)", data, re.I) else 10**9):
            part = s.recv(65536)
            if not part:
                break
            data += part
    head_b, body = data.split(b"\r\n\r\n", 1)
    return int(head_b.split()[1]), json.loads(body), sent


def test_oversized_body_refused_by_content_length_without_reading(bounded, counting):
    from vitsq.limits import SERVE_MAX_BODY_BYTES

    calls = counting.calls
    size = 200 * 1024 * 1024  # announced, never sent: the answer must come without it
    head = (f"POST /api/synthesize HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {size}\r\n\r\n").encode()
    t0 = time.time()
    status, body, _ = _raw_request(bounded, head)
    assert status == 413 and f"limit is {SERVE_MAX_BODY_BYTES} bytes" in body["error"] and str(size) in body["error"]
    assert time.time() - t0 < 10 and counting.calls == calls


def test_oversized_chunked_body_refused_while_streaming(bounded, counting):
    from vitsq.limits import SERVE_MAX_BODY_BYTES

    calls = counting.calls
    head = (b"POST /api/synthesize HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
    piece = b"x" * 16384
    n_chunks = 4 * SERVE_MAX_BODY_BYTES // len(piece)  # four times the cap, if it were all read
    chunks = [b"%x\r\n%s\r\n" % (len(piece), piece) for _ in range(n_chunks)]
    status, body, sent = _raw_request(bounded, head, chunks)
    assert status == 413 and f"limit of {SERVE_MAX_BODY_BYTES} bytes" in body["error"]
    assert sent < n_chunks  # answered before the whole body was sent
    assert counting.calls == calls


def test_body_cap_in_process_and_small_chunked_body_still_works(counting):
    """Through the ASGI app (TestClient): Content-Length and chunked bodies over the cap are 413;
    a chunked body under the cap is read whole and synthesized."""
    import json

    from fastapi.testclient import TestClient

    from vitsq.limits import SERVE_MAX_BODY_BYTES

    app = create_app(load_models([("joe · counted", counting)]), max_chars=200, workers=1)
    with TestClient(app, base_url="http://127.0.0.1") as c:
        calls = counting.calls
        r = c.post("/api/synthesize", content=b"{" + b" " * SERVE_MAX_BODY_BYTES + b"}",
                   headers={"content-type": "application/json"})
        assert r.status_code == 413 and "bytes" in r.json()["error"]
        big = iter([b" " * 65536] * (SERVE_MAX_BODY_BYTES // 65536 + 2))
        r = c.post("/api/synthesize", content=big, headers={"content-type": "application/json"})
        assert r.status_code == 413 and f"limit of {SERVE_MAX_BODY_BYTES} bytes" in r.json()["error"]
        assert counting.calls == calls
        payload = json.dumps({"text": "Hi there.", "seed": 1}).encode()
        r = c.post("/api/synthesize", content=iter([payload[:5], payload[5:]]), headers={"content-type": "application/json"})
        assert r.status_code == 200 and r.json()["results"][0]["ok"], r.text
        assert counting.calls == calls + 1


@pytest.mark.parametrize(
    "body, status, message",
    [
        ({"text": "Hi.", "length_scale": 100}, 422, "length_scale=100 is over this server's limit of 10"),
        ({"text": "Hi.", "length_scale": 1e308}, 422, "limit of 10"),
        # one long sentence: its estimate passes the per-utterance memory bound at length_scale 1 only
        ({"text": "and the cat sat on the mat " * 20, "length_scale": 5}, 413, "frames per utterance"),
        # many short sentences: each utterance is small but the request's total is over the budget
        ({"text": "The cat sat on the mat. " * 400}, 413, "frames per request"),
        ({"text": "Hello.\u0000 long tail"}, 400, "U+0000"),
        ({"text": "\ud800"}, 400, "U+D800"),
    ],
)
def test_over_budget_requests_are_refused_before_synthesis(bounded, counting, body, status, message):
    import json

    calls = counting.calls
    payload = json.dumps(body).encode()
    head = (f"POST /api/synthesize HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n").encode()
    got, data, _ = _raw_request(bounded, head + payload)
    assert got == status, data
    assert message in data["error"]
    assert counting.calls == calls


def test_estimate_frames_is_ids_times_scale_times_bound():
    from vitsq.limits import FRAMES_PER_TOKEN_BOUND as K
    from vitsq.serve.app import estimate_frames

    assert estimate_frames([[1] * 10, [1] * 30], 2.0) == (30 * 2 * K, 40 * 2 * K)
    assert estimate_frames([[1] * 3], 0.5) == (int(3 * 0.5 * K + 0.999), int(3 * 0.5 * K + 0.999))


def test_real_frames_stay_under_the_estimate(joe_torch):
    """The per-id bound holds with margin on the real voice (pauses included)."""
    from vitsq.limits import FRAMES_PER_TOKEN_BOUND
    from vitsq.serve.app import estimate_frames

    text = "Wait... what?! No, no, no: I said (quietly) that we'd go; then we left."
    for ls in (1.0, 2.5):
        ids = joe_torch.text_to_ids(text)
        frames = len(joe_torch.synthesize(text, length_scale=ls, seed=0).samples) / 256  # joe's hop
        assert frames < estimate_frames(ids, ls)[1] / 2  # at least 2x margin
        assert frames > sum(map(len, ids)) * ls  # and the bound is not absurdly loose
    assert FRAMES_PER_TOKEN_BOUND == 8


def test_port_in_use_exits_2_with_one_line():
    import subprocess
    import sys

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = subprocess.run([sys.executable, "-m", "vitsq.cli", "serve", "--port", str(port)],
                           capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and f"127.0.0.1:{port}" in lines[0] and "--port" in lines[0], r.stderr
    assert "loading" not in r.stdout  # refused before any model loads


# ----------------------------------------------------------------------------- variants and weights
def test_models_are_loaded_through_the_one_variant_grammar(monkeypatch, joe_torch, joe_onnx):
    """`[LABEL=]SPEC[@BACKEND]` as bench and eval read it: no @BACKEND runs the model on its own
    backend (vitsq.load gets none), LABEL= names the card, a path never reaches the label."""
    import vitsq.registry

    calls = []

    def fake_load(spec, **kw):
        calls.append((spec, kw))
        return joe_onnx if kw.get("backend") == "onnx" else joe_torch

    monkeypatch.setattr(vitsq.registry, "load", fake_load)  # what vitsq.load is
    entries = load_models(["joe", "fast=joe@onnx", "/models/voices/joe.onnx@onnx"])
    assert calls == [("joe", {}), ("joe", {"backend": "onnx"}), ("/models/voices/joe.onnx", {"backend": "onnx"})]
    assert [(e.id, e.label) for e in entries] == [("joe-torch", "joe · torch"), ("fast", "fast"),
                                                  ("joe-onnx-onnx", "joe.onnx · onnx")]
    assert entries[1].synth is joe_onnx
    with pytest.raises(InputError, match=r"write the backend after the spec, joe@onnx"):
        load_models(["onnx:joe"])


def test_weights_are_unknown_when_describe_fails_or_is_silent(joe_torch):
    from vitsq.serve.app import ModelEntry

    class NoDescribe(BrokenSynth):
        def describe(self):
            raise RuntimeError("no metadata")

    class Silent(BrokenSynth):
        def describe(self):
            return {"name": "silent"}

    for synth in (NoDescribe(joe_torch), Silent(joe_torch)):
        assert ModelEntry("x", "x", synth, threading.Lock()).info()["weights"] == "unknown"
    assert ModelEntry("x", "x", BrokenSynth(joe_torch), threading.Lock()).info()["weights"] == "trained"
