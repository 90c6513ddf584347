"""Web app: JSON API (models, synthesize, audio, errors, concurrency) and a real browser test."""

from __future__ import annotations

import io
import os
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
        ({"text": "Hi.", "variants": ["joe-torch"], "length_scale": 0}, 400, "length_scale=0.0 is not valid"),
        ({"text": "Hi.", "variants": ["joe-torch"], "noise_w": -1}, 400, "noise_w=-1.0 is not valid"),
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
    with pytest.raises(InputError, match="max_chars must be >= 1"):
        create_app([("x", object())], max_chars=0)


# ----------------------------------------------------------------------------- browser
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def live_server(entries):
    import uvicorn

    app = create_app(entries, max_chars=200, workers=2)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    t.join(timeout=10)


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
