"""The A/B listening web app: one page plus a JSON API, over models loaded once at start.

* Models are loaded when the app is created and listed by id (``GET /api/models``); the page
  and the API only ever name ids, never file paths.
* ``POST /api/synthesize`` runs the text through every selected variant with the **same seed and
  settings**, one variant after another in a worker of a bounded thread pool (requests run in
  parallel up to the pool size; one lock per model, so a model never runs two requests at once);
  each variant's audio is kept in a bounded in-memory
  store and served from ``GET /api/audio/{clip}.wav``.
* Errors a user can cause (text too long/empty, unknown variant, bad speaker or scale) are 4xx
  JSON ``{"error": ...}`` responses naming what is valid; a variant that fails at synthesis gets
  its error in its own result while the others still return audio.
* The work one request may cause is bounded before anything runs (values in
  :mod:`vitsq.limits`): the body is refused with 413 past ``SERVE_MAX_BODY_BYTES`` without being
  read (by its Content-Length, or as soon as a chunked body passes the cap); ``length_scale``
  over ``MAX_LENGTH_SCALE`` is 422; a request whose estimated output frames (ids x length_scale x
  ``FRAMES_PER_TOKEN_BOUND``, per utterance and summed over the selected variants) exceed
  ``SERVE_MAX_UTTERANCE_FRAMES`` / ``SERVE_MAX_FRAMES`` is 413.
* ``POST /api/stream`` takes the same body (plus an optional ``schedule``: frames per chunk, as
  :meth:`vitsq.synth.Synthesizer.stream` takes it), is checked the same way (the same 4xx JSON
  errors, before anything is sent), and answers with the audio as it is produced: variant after
  variant, chunk after chunk, in the frames described below. A client that goes away stops the
  work at the next chunk (the synthesizer's stream is closed, no later variant starts) and frees
  its worker and request slot.

Stream format (``Content-Type: application/x-vitsq-stream``, chunked HTTP): a sequence of frames,
each ``[uint32 little-endian n][n bytes of UTF-8 JSON header][header["bytes"] bytes of payload]``.
Every header has ``type``, ``bytes`` and ``t`` (server seconds since the request began, when
the frame was made). Types, in order for each variant:

* ``start``: ``variant``, ``label``, ``backend``, ``sample_rate``, ``seeded``, ``streaming``
  (``"frames"``: decoded chunk by chunk; ``"sentences"``: one chunk per sentence), ``size_bytes``,
  ``weights``; no payload.
* ``chunk``: ``variant``, ``index``, ``sentence``, ``offset`` (first sample's index in the
  variant's audio), ``samples``, ``ready_seconds`` (from the variant's ``stream()`` call until the
  chunk was ready), ``sentence_end``; payload: ``samples`` 16-bit little-endian PCM samples, mono,
  converted as :meth:`vitsq.synth.Audio.to_int16` does. Concatenated, a variant's chunks are its
  clip from ``POST /api/synthesize``.
* ``end``: ``variant``, ``metrics`` (``ttfa_seconds``: first chunk's ``ready_seconds``;
  ``total_seconds``/``model_seconds``: the last chunk's, G2P of each sentence included;
  ``frontend_seconds`` and ``tokens``: the whole text's front-end, run once to check the work
  bounds; ``chunks``, ``duration_seconds``, ``rtf``, ``tokens_per_second``, ``size_bytes``,
  ``sample_rate``), or ``error``: ``variant``, ``error`` (that variant failed; the next one
  still runs).
* ``done`` once at the end: ``wall_seconds``. A stream without it was cut short.
"""


import asyncio
import functools
import io
import json
import logging
import re
import struct
import threading
import time
import uuid
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, AsyncIterator, Iterator, Sequence

import vitsq.limits as limits
from vitsq.errors import InputError, VitsqError

log = logging.getLogger(__name__)

DEFAULT_MODELS = ("joe", "joe@onnx")
DEFAULT_MAX_CHARS = limits.SERVE_MAX_CHARS
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
#: Content-Type of ``POST /api/stream`` (frames described in this module's docstring)
STREAM_MEDIA_TYPE = "application/x-vitsq-stream"


@dataclass
class ModelEntry:
    """One loaded variant, as the page sees it."""

    id: str
    label: str
    synth: Any
    lock: threading.Lock

    def info(self) -> dict[str, Any]:
        s = self.synth
        try:
            d = dict(s.describe())
        except Exception as e:  # noqa: BLE001 - informative only
            d = {"error": str(e)}
        # a description that failed or does not say is "unknown", never assumed trained
        weights = "unknown" if "error" in d else str(d.get("weights") or "unknown")
        try:
            size = int(s.size_bytes())
        except Exception:  # noqa: BLE001
            size = None
        c = getattr(s, "config", None)
        return {
            "id": self.id,
            "label": self.label,
            "name": getattr(s, "name", self.label),
            "backend": getattr(s, "backend", "?"),
            "speakers": int(getattr(s, "num_speakers", 1)),
            "sample_rate": int(s.sample_rate),
            "language": getattr(s, "language", None),
            "size_bytes": size,
            "weights": weights,
            "quantization": _no_paths(d.get("quantization")),
            "defaults": {
                "noise_scale": getattr(c, "noise_scale", 0.667),
                "length_scale": getattr(c, "length_scale", 1.0),
                "noise_w": getattr(c, "noise_w", 0.8),
            },
        }


def _no_paths(obj: Any) -> Any:
    """Drop string values that are file paths: the API describes models, never where they live."""
    if isinstance(obj, dict):
        return {k: _no_paths(v) for k, v in obj.items() if not _is_path(v)}
    if isinstance(obj, (list, tuple)):
        return [_no_paths(v) for v in obj if not _is_path(v)]
    return obj


def _is_path(v: Any) -> bool:
    return isinstance(v, str) and (v.startswith(("/", "~", "./", "../")) or ":\\" in v)


def _slug(text: str) -> str:
    s = re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()
    return s or "model"


def _load_spec(text: str) -> tuple[str, Any]:
    """(label, synthesizer) for one ``[LABEL=]SPEC[@BACKEND]`` (:func:`vitsq.variants.parse_variant`).

    Without ``@BACKEND`` the model runs on its own backend. The label is the given ``LABEL``, else
    the spec's file name and the backend it runs on (``joe · torch``): never a folder path.
    """
    from pathlib import Path

    from vitsq.variants import AUTO, parse_variant

    v = parse_variant(text)
    synth = v.load()
    if "=" in text:  # an explicit LABEL=
        return v.label, synth
    backend = str(getattr(synth, "backend", v.backend)) if v.backend == AUTO else v.backend
    return f"{Path(v.spec).name or v.spec} · {backend}", synth


def load_models(specs: Sequence[Any] = DEFAULT_MODELS) -> list[ModelEntry]:
    """Load variants once. ``specs``: ``[LABEL=]SPEC[@BACKEND]`` strings (see :mod:`vitsq.variants`),
    or (label, Synthesizer) pairs.

    Ids are short slugs of the label's model name and backend (``joe-torch``, ``joe-onnx``,
    ``joe-int8-torch``); the file path never reaches the page.
    """
    entries: list[ModelEntry] = []
    used: set[str] = set()
    for item in specs:
        if isinstance(item, tuple):
            label, synth = item
            base = _slug(label)
        else:
            label, synth = _load_spec(str(item).strip())
            base = _slug(label.replace("·", ""))
        mid, k = base, 2
        while mid in used:
            mid, k = f"{base}-{k}", k + 1
        used.add(mid)
        entries.append(ModelEntry(id=mid, label=label, synth=synth, lock=threading.Lock()))
        log.info("loaded %s as %s", label, mid)
    if not entries:
        raise InputError("no models to serve: give at least one model (e.g. joe joe@onnx)")
    return entries


class ClipStore:
    """Bounded in-memory store of wav clips (oldest evicted first); thread-safe."""

    def __init__(self, capacity: int = 256) -> None:
        self.capacity = capacity
        self._clips: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, wav: bytes) -> str:
        key = uuid.uuid4().hex
        with self._lock:
            self._clips[key] = wav
            while len(self._clips) > self.capacity:
                self._clips.popitem(last=False)
        return key

    def get(self, key: str) -> bytes | None:
        with self._lock:
            return self._clips.get(key)


def _wav_bytes(audio: Any) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, audio.to_int16(), audio.sample_rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


class BodyLimitMiddleware:
    """ASGI middleware refusing a request body over ``max_bytes`` with 413, before the app reads it.

    A declared Content-Length is checked before any of the body is received; a body without one
    (chunked) is received up to the cap and refused as soon as it passes it, then handed to the
    app whole.
    """

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def _refuse(self, send: Any, status: int, message: str) -> None:
        import json

        body = json.dumps({"error": message}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                return await self._refuse(send, 400, f"bad Content-Length header {declared[:40]!r}")
            if int(declared) > self.max_bytes:
                return await self._refuse(send, 413, f"request body has {int(declared)} bytes; this server's "
                                                     f"limit is {self.max_bytes} bytes")
            return await self.app(scope, receive, send)  # the server stops at the declared length
        body, more = bytearray(), True
        while more:
            msg = await receive()
            if msg["type"] != "http.request":  # client went away
                return
            body += msg.get("body", b"")
            more = msg.get("more_body", False)
            if len(body) > self.max_bytes:
                return await self._refuse(send, 413, f"request body exceeds this server's limit of "
                                                     f"{self.max_bytes} bytes")
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def estimate_frames(ids: Sequence[Sequence[int]], length_scale: float) -> tuple[int, int]:
    """(largest utterance, total) estimated output frames of one variant's utterances:
    ids x length_scale x :data:`vitsq.limits.FRAMES_PER_TOKEN_BOUND`."""
    per = [int(len(x) * length_scale * limits.FRAMES_PER_TOKEN_BOUND + 0.999) for x in ids]
    return max(per, default=0), sum(per)


def length_scale_error(length_scale: float | None) -> tuple[int, str] | None:
    """(422, message) for a length_scale over :data:`vitsq.limits.MAX_LENGTH_SCALE`, else None."""
    if length_scale is not None and length_scale > limits.MAX_LENGTH_SCALE:
        return 422, (f"length_scale={length_scale:g} is over this server's limit of {limits.MAX_LENGTH_SCALE:g} "
                     "(use a number > 0 and <= the limit)")
    return None


def check_work(chosen: Sequence[ModelEntry], infos: dict[str, dict], text: str,
               length_scale: float | None, fronts: dict[str, tuple[int, float]] | None = None,
               ) -> tuple[int, str] | None:
    """(HTTP status, message) when a request would exceed the server's work bounds, else None.

    Runs only the front-ends (cheap): the frame count is estimated, not synthesized. ``fronts``,
    when given, receives each variant's (ids, front-end seconds) of the whole text.
    """
    over = length_scale_error(length_scale)
    if over:
        return over
    total = 0
    for e in chosen:
        ls = length_scale if length_scale is not None else float(infos[e.id]["defaults"]["length_scale"])
        t0 = time.perf_counter()
        ids = e.synth.text_to_ids(text)  # InputError: bad text for this model
        if fronts is not None:
            fronts[e.id] = (sum(map(len, ids)), time.perf_counter() - t0)
        largest, frames = estimate_frames(ids, ls)
        if largest > limits.SERVE_MAX_UTTERANCE_FRAMES:
            return 413, (f"an utterance of {max(map(len, ids))} ids at length_scale {ls:g} is estimated at "
                         f"{largest} frames for {e.id}; this server's limit is {limits.SERVE_MAX_UTTERANCE_FRAMES} "
                         f"frames per utterance ({limits.FRAMES_PER_TOKEN_BOUND} frames per id): lower length_scale")
        total += frames
    if total > limits.SERVE_MAX_FRAMES:
        return 413, (f"this request is estimated at {total} output frames over {len(chosen)} variant(s); this "
                     f"server's limit is {limits.SERVE_MAX_FRAMES} frames per request (ids x length_scale x "
                     f"{limits.FRAMES_PER_TOKEN_BOUND}): send shorter text, fewer variants or a lower length_scale")
    return None


@dataclass
class _Server:
    """What the routes of one app share: the models, their infos, the worker pool, the clips."""

    entries: list[ModelEntry]
    by_id: dict[str, ModelEntry]
    infos: dict[str, dict[str, Any]]
    pool: ThreadPoolExecutor
    clips: ClipStore
    pending: threading.BoundedSemaphore
    max_chars: int
    max_pending: int
    #: streams whose worker has not finished yet (``app.state.streams``)
    streams: set = field(default_factory=set)
    streams_lock: threading.Lock = field(default_factory=threading.Lock)


def _error(status: int, message: str) -> Any:
    from fastapi.responses import JSONResponse

    return JSONResponse(status_code=status, content={"error": message})


def _request_model(max_chars: int) -> type:
    """The ``POST /api/synthesize`` body (its text cap documented in the OpenAPI schema)."""
    from pydantic import BaseModel, Field

    class SynthesizeRequest(BaseModel):
        text: str = Field(..., description=f"text to speak (at most {max_chars} characters)")
        variants: list[str] | None = Field(None, description="model ids from /api/models (default: all)")
        speaker: int | None = Field(None, description="speaker id for multi-speaker models")
        noise_scale: float | None = None
        length_scale: float | None = None
        noise_w: float | None = None
        seed: int = Field(0, description="noise seed, the same for every variant")

    return SynthesizeRequest


def _stream_request_model(base: type) -> type:
    """The ``POST /api/stream`` body: the synthesize body plus the chunk schedule."""
    from pydantic import Field

    class StreamRequest(base):  # type: ignore[misc, valid-type]
        schedule: list[int] | int | None = Field(
            None, description="frames per chunk: one count, or a list (the last repeats); default: 8 frames "
                              "doubling to 128. Backends that decode whole sentences send one chunk per sentence")

    return StreamRequest


def _add_validation_handler(app: Any) -> None:
    """Pydantic's validation errors as one-line 422 JSON ``{"error": ...}``."""
    from fastapi import Request
    from fastapi.exceptions import RequestValidationError

    @app.exception_handler(RequestValidationError)
    async def _validation(_req: Request, exc: RequestValidationError):  # noqa: ANN202
        parts = []
        for e in exc.errors():
            loc = ".".join(str(x) for x in e.get("loc", ()) if x != "body")
            parts.append(f"{loc or 'body'}: {e.get('msg')}")
        return _error(422, "invalid request: " + "; ".join(parts))


def _add_read_routes(app: Any, srv: _Server) -> None:
    """``GET /`` (the page), ``/api/models`` and ``/api/audio/{clip}.wav``."""
    from fastapi.responses import HTMLResponse, Response

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> HTMLResponse:
        html = resources.files("vitsq.serve").joinpath("static", "index.html").read_text(encoding="utf-8")
        return HTMLResponse(html.replace("__MAX_CHARS__", str(srv.max_chars)))

    @app.get("/api/models", summary="the loaded model variants, by id")
    def list_models() -> dict[str, Any]:
        return {"models": [srv.infos[e.id] for e in srv.entries], "max_chars": srv.max_chars}

    @app.get("/api/audio/{clip}.wav", summary="a synthesized clip (16-bit PCM wav)")
    def audio(clip: str) -> Response:
        wav = srv.clips.get(clip)
        if wav is None:
            return _error(404, f"clip {clip!r} not found (clips are kept in memory for the last "
                               f"{srv.clips.capacity} results)")
        return Response(content=wav, media_type="audio/wav",
                        headers={"Content-Disposition": f'inline; filename="{clip}.wav"'})


def _check_request(srv: _Server, req: Any, fronts: dict[str, tuple[int, float]] | None = None,
                   ) -> tuple[list[str], tuple[int, str] | None]:
    """(selected ids, None) for a request that may run, or (…, (HTTP status, message)) naming
    what is wrong: unknown/duplicate variants, text, speaker, scales, the chunk schedule (a
    stream request), the work bounds. ``fronts``: see :func:`check_work`."""
    from vitsq.streaming import ChunkSchedule
    from vitsq.synth import check_scale, check_speaker, validate_text

    chosen = req.variants if req.variants is not None else [e.id for e in srv.entries]
    valid = ", ".join(srv.by_id)
    if not chosen:
        return chosen, (400, f"no variants selected: choose one or more of {valid}")
    unknown = [v for v in chosen if v not in srv.by_id]
    if unknown:
        return chosen, (400, f"unknown variant {unknown[0]!r}: valid variants are {valid}")
    if len(set(chosen)) != len(chosen):
        return chosen, (400, "a variant is selected twice: select each at most once")
    try:
        if len(req.text) > srv.max_chars:
            return chosen, (413, f"text has {len(req.text)} characters; this server's limit is {srv.max_chars}")
        validate_text(req.text, srv.max_chars)
        for e in (srv.by_id[v] for v in chosen):
            check_speaker(req.speaker, srv.infos[e.id]["speakers"])
        over = length_scale_error(req.length_scale)
        if over:
            return chosen, over
        for name, allow0 in (("noise_scale", True), ("length_scale", False), ("noise_w", True)):
            val = getattr(req, name)
            if val is not None:
                check_scale(name, val, allow_zero=allow0)
        if getattr(req, "schedule", None) is not None:
            ChunkSchedule.build(req.schedule)  # InputError: sizes of 0, negative, empty
        return chosen, check_work([srv.by_id[v] for v in chosen], srv.infos, req.text, req.length_scale, fronts)
    except VitsqError as e:
        return chosen, (400, str(e))


def _run_one(srv: _Server, entry: ModelEntry, req: Any) -> dict[str, Any]:
    """Synthesize ``req`` with one variant (under its lock); its card's JSON, error included."""
    info = srv.infos[entry.id]
    base = {"variant": entry.id, "label": entry.label, "backend": info["backend"],
            "size_bytes": info["size_bytes"], "weights": info["weights"]}
    # a backend whose noise cannot be seeded (ONNX Runtime draws it in the graph) refuses a
    # seed; it gets none and its card says so ("seeded": false)
    seeded = bool(getattr(entry.synth, "seedable", True))
    base["seeded"] = seeded
    try:
        with entry.lock:
            audio = entry.synth.synthesize(req.text, speaker=req.speaker, noise_scale=req.noise_scale,
                                           length_scale=req.length_scale, noise_w=req.noise_w,
                                           seed=req.seed if seeded else None)
        clip = srv.clips.put(_wav_bytes(audio))
    except VitsqError as e:
        return {**base, "ok": False, "error": str(e)}
    except Exception as e:  # noqa: BLE001 - one variant's failure shows in its card only
        log.exception("variant %s failed", entry.id)
        return {**base, "ok": False, "error": f"{type(e).__name__}: {e}"}
    return {
        **base,
        "ok": True,
        "error": None,
        "audio_url": f"/api/audio/{clip}.wav",
        "download_name": f"{entry.id}_seed{req.seed}.wav",
        "metrics": {
            "frontend_seconds": audio.frontend_seconds,
            "tokens": audio.num_tokens,
            "tokens_per_second": audio.tokens_per_second,
            "model_seconds": audio.model_seconds,
            "duration_seconds": audio.duration,
            "rtf": audio.rtf,
            "size_bytes": info["size_bytes"],
            "sample_rate": audio.sample_rate,
        },
    }


def _frame(header: dict[str, Any], payload: bytes = b"") -> bytes:
    """One stream frame: uint32 LE header length, the JSON header (with ``bytes``), the payload."""
    from vitsq.jsonutil import to_jsonable

    head = json.dumps(to_jsonable({**header, "bytes": len(payload)}), separators=(",", ":"),
                      allow_nan=False).encode()
    return struct.pack("<I", len(head)) + head + payload


def _whole_clip(synth: Any, text: str, knobs: dict[str, Any]) -> Iterator[Any]:
    """A synthesizer without ``stream()``: its whole clip as the one chunk of its stream."""
    from vitsq.streaming import AudioChunk

    t0 = time.perf_counter()
    audio = synth.synthesize(text, **knobs)
    yield AudioChunk(samples=audio.samples, sample_rate=audio.sample_rate, index=0, sentence=0, offset=0,
                     ready_seconds=time.perf_counter() - t0, sentence_end=True)


class _StreamJob:
    """The work of one ``POST /api/stream``: its variants' chunks, made one variant after another
    in a pool worker (under each model's lock), handed to the event loop as frames.

    :meth:`cancel` (the client went away, or the response ended) makes the worker stop after the
    chunk it is making: the synthesizer's stream is closed (its ``close()`` runs, so the backend
    stops), no later variant starts, and the worker and the request slot are freed.
    """

    def __init__(self, srv: _Server, chosen: Sequence[str], req: Any, fronts: dict[str, tuple[int, float]]) -> None:
        self.srv, self.req, self.fronts = srv, req, fronts
        self.entries = [srv.by_id[v] for v in chosen]
        self.stopped = threading.Event()
        self.t0 = time.perf_counter()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue | None = None
        self._finished = False
        self._finish_lock = threading.Lock()

    def start(self) -> None:
        """Start the worker (in the event loop that will read :meth:`frames`)."""
        self._loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue()
        with self.srv.streams_lock:
            self.srv.streams.add(self)
        try:
            future = self.srv.pool.submit(self._work)
        except RuntimeError:  # the pool is shut down (the app is stopping)
            self.finish()
            raise
        future.add_done_callback(self._done)

    def _done(self, future: Any) -> None:
        if future.cancelled():  # the pool shut down before the worker ran: end the stream
            self._put(None)
        self.finish()

    @property
    def started(self) -> bool:
        return self._loop is not None

    def cancel(self) -> None:
        """Stop at the next chunk (idempotent; a finished job ignores it)."""
        self.stopped.set()

    def finish(self) -> None:
        """Free the request slot once: after the worker ends, or when it never started."""
        with self._finish_lock:
            if self._finished:
                return
            self._finished = True
        with self.srv.streams_lock:
            self.srv.streams.discard(self)
        self.srv.pending.release()

    async def frames(self) -> AsyncIterator[bytes]:
        """The frames as the worker makes them; leaving early (a disconnect) cancels the work."""
        try:
            while True:
                frame = await self._queue.get()
                if frame is None:
                    return
                yield frame
        finally:
            self.cancel()

    def _put(self, frame: bytes | None) -> None:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, frame)
        except RuntimeError:  # the event loop is closed: nobody reads this stream any more
            self.stopped.set()

    def _send(self, header: dict[str, Any], payload: bytes = b"") -> None:
        self._put(_frame({**header, "t": time.perf_counter() - self.t0}, payload))

    def _work(self) -> None:
        try:
            for entry in self.entries:
                if self.stopped.is_set():
                    return
                self._variant(entry)
            if not self.stopped.is_set():
                self._send({"type": "done", "wall_seconds": time.perf_counter() - self.t0})
        except Exception:  # noqa: BLE001 - a bug here must still end the stream
            log.exception("stream worker failed")
        finally:
            self._put(None)

    def _variant(self, entry: ModelEntry) -> None:
        """Stream one variant: a start frame, its chunks, then an end (or error) frame."""
        info = self.srv.infos[entry.id]
        seeded = bool(getattr(entry.synth, "seedable", True))  # as in _run_one
        self._send({"type": "start", "variant": entry.id, "label": entry.label, "backend": info["backend"],
                    "sample_rate": info["sample_rate"], "seeded": seeded, "size_bytes": info["size_bytes"],
                    "weights": info["weights"], "streaming": str(getattr(entry.synth, "streaming", "sentences"))})
        r = self.req
        knobs = dict(speaker=r.speaker, noise_scale=r.noise_scale, length_scale=r.length_scale, noise_w=r.noise_w,
                     seed=r.seed if seeded else None)
        ready: list[float] = []
        samples = 0
        try:
            with entry.lock:
                if self.stopped.is_set():
                    return
                stream = getattr(entry.synth, "stream", None)
                chunks = (stream(r.text, schedule=r.schedule, **knobs) if stream is not None
                          else _whole_clip(entry.synth, r.text, knobs))
                try:
                    for c in chunks:
                        pcm = c.to_int16().astype("<i2")
                        self._send({"type": "chunk", "variant": entry.id, "index": c.index, "sentence": c.sentence,
                                    "offset": c.offset, "samples": len(pcm), "ready_seconds": c.ready_seconds,
                                    "sentence_end": c.sentence_end}, pcm.tobytes())
                        ready.append(c.ready_seconds)
                        samples += len(pcm)
                        if self.stopped.is_set():
                            return
                finally:
                    close = getattr(chunks, "close", None)
                    if close is not None:
                        close()  # stops the backend's work now, not when the generator is collected
        except VitsqError as e:
            self._send({"type": "error", "variant": entry.id, "error": str(e)})
            return
        except Exception as e:  # noqa: BLE001 - one variant's failure shows in its card only
            log.exception("variant %s failed while streaming", entry.id)
            self._send({"type": "error", "variant": entry.id, "error": f"{type(e).__name__}: {e}"})
            return
        self._send({"type": "end", "variant": entry.id, "metrics": self._metrics(entry, ready, samples)})

    def _metrics(self, entry: ModelEntry, ready: list[float], samples: int) -> dict[str, Any]:
        info = self.srv.infos[entry.id]
        tokens, g2p = self.fronts.get(entry.id, (0, 0.0))
        total = ready[-1] if ready else 0.0
        duration = samples / float(info["sample_rate"])
        return {"ttfa_seconds": ready[0] if ready else None, "total_seconds": total, "model_seconds": total,
                "chunks": len(ready), "duration_seconds": duration,
                "rtf": total / duration if duration > 0 else None, "tokens": tokens,
                "tokens_per_second": tokens / total if total > 0 else None, "frontend_seconds": g2p,
                "size_bytes": info["size_bytes"], "sample_rate": info["sample_rate"]}


@functools.cache
def _job_response_class() -> type:
    """A StreamingResponse that runs a :class:`_StreamJob` and always cancels it when the
    response ends, however it ends (done, client gone, send failed, never iterated)."""
    from starlette.responses import StreamingResponse

    class JobResponse(StreamingResponse):
        def __init__(self, job: _StreamJob) -> None:
            super().__init__(job.frames(), media_type=STREAM_MEDIA_TYPE,
                             headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"})
            self.job = job

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            try:
                self.job.start()
                await super().__call__(scope, receive, send)
            finally:
                self.job.cancel()
                if not self.job.started:  # never started: free its slot here
                    self.job.finish()

    return JobResponse


def _add_stream_route(app: Any, srv: _Server) -> None:
    """``POST /api/stream``: checked as ``/api/synthesize``, then frames as the audio is made."""
    StreamRequest = _stream_request_model(_request_model(srv.max_chars))

    @app.post("/api/stream", summary="stream each selected variant's audio as it is produced",
              response_class=_job_response_class(), status_code=200,
              responses={200: {"content": {STREAM_MEDIA_TYPE: {}},
                               "description": "frames: uint32 LE header length, JSON header, payload "
                                              "(16-bit LE PCM in chunk frames); see vitsq.serve.app"}})
    async def stream(req: StreamRequest):  # noqa: ANN202
        fronts: dict[str, tuple[int, float]] = {}
        chosen, refused = _check_request(srv, req, fronts)
        if refused:
            return _error(*refused)
        if not srv.pending.acquire(blocking=False):
            return _error(503, f"server busy: more than {srv.max_pending} requests in flight; try again shortly")
        return _job_response_class()(_StreamJob(srv, chosen, req, fronts))


def _add_synthesize_route(app: Any, srv: _Server) -> None:
    """``POST /api/synthesize``: validated up front, then every selected variant in one worker."""
    SynthesizeRequest = _request_model(srv.max_chars)

    @app.post("/api/synthesize", summary="synthesize text with each selected variant (same seed)")
    async def synthesize(req: SynthesizeRequest):  # noqa: ANN202
        import asyncio

        chosen, refused = _check_request(srv, req)
        if refused:
            return _error(*refused)
        if not srv.pending.acquire(blocking=False):
            return _error(503, f"server busy: more than {srv.max_pending} requests in flight; try again shortly")
        try:
            t0 = time.perf_counter()
            loop = asyncio.get_running_loop()
            # one request's variants run one after another in one worker, so their timings are
            # comparable (not competing for the same cores); separate requests run in parallel
            results = await loop.run_in_executor(srv.pool, lambda: [_run_one(srv, srv.by_id[v], req) for v in chosen])
        finally:
            srv.pending.release()
        return {"id": uuid.uuid4().hex[:8], "text": req.text, "seed": req.seed, "speaker": req.speaker,
                "settings": {"noise_scale": req.noise_scale, "length_scale": req.length_scale, "noise_w": req.noise_w},
                "wall_seconds": time.perf_counter() - t0, "results": list(results)}


def create_app(models: Sequence[Any] | Sequence[ModelEntry] = DEFAULT_MODELS, max_chars: int = DEFAULT_MAX_CHARS,
               workers: int = 2, max_pending: int = 16, clip_capacity: int = 256):
    """Build the FastAPI app. ``models``: specs/pairs for :func:`load_models`, or ready ModelEntry objects."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI

    if not 1 <= max_chars <= limits.MAX_TEXT_CHARS:
        raise InputError(f"max_chars must be in 1..{limits.MAX_TEXT_CHARS}, got {max_chars}")
    if workers < 1:
        raise InputError(f"workers must be >= 1, got {workers}")
    entries = list(models) if models and all(isinstance(m, ModelEntry) for m in models) else load_models(models)
    srv = _Server(entries=entries, by_id={e.id: e for e in entries}, infos={e.id: e.info() for e in entries},
                  pool=ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vitsq-synth"),
                  clips=ClipStore(clip_capacity), pending=threading.BoundedSemaphore(max_pending),
                  max_chars=max_chars, max_pending=max_pending)

    @asynccontextmanager
    async def lifespan(_app):  # noqa: ANN202 - the pool lives as long as the app
        yield
        srv.pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="vitsq A/B listening", version="1", lifespan=lifespan,
                  description="Compare FP32 and quantized TTS variants on the same text and seed.")
    app.state.entries = entries
    app.state.pool = srv.pool
    app.state.streams = srv.streams  # the streams still working (empty when all have stopped)
    app.add_middleware(BodyLimitMiddleware, max_bytes=limits.SERVE_MAX_BODY_BYTES)
    _add_validation_handler(app)
    _add_read_routes(app, srv)
    _add_synthesize_route(app, srv)
    _add_stream_route(app, srv)
    return app


def check_host(host: str) -> str:
    """The server binds loopback only; anything else is refused with the valid choices."""
    if host not in LOOPBACK_HOSTS:
        raise InputError(f"host {host!r} is not a loopback address: vitsq serve binds {', '.join(LOOPBACK_HOSTS)} only")
    return host
