"""Every bound on the work one input may cause, in one place (documented in docs/limits.md).

A request that exceeds a bound is refused up front with an error naming the bound and the
value asked for; nothing here is a silent truncation. Long text is not refused below
``MAX_TEXT_CHARS``: the front-ends split it into utterances of at most
``MAX_TOKENS_PER_UTTERANCE`` ids, which is what bounds memory.

Measured on this repo's models (CPU, FP32): ~3 output frames per input id at length_scale 1
(joe 2.6-3.3, untrained vosk-ru-multi 3.1), and ~200 KB of peak memory per decoded frame of one
utterance (joe, one 79-id sentence at length_scale 10 and 30).
"""

from __future__ import annotations

#: characters in one ``synthesize`` text (the library and the CLI)
MAX_TEXT_CHARS = 20_000
#: characters in one web request (the server's default; ``vitsq serve --max-chars``, at most
#: ``MAX_TEXT_CHARS``)
SERVE_MAX_CHARS = 1_000
#: bytes of one HTTP request body, checked before the body is read: the JSON of a
#: ``MAX_TEXT_CHARS`` text whose every character is a ``\\uXXXX\\uXXXX`` escape (12 bytes) fits
SERVE_MAX_BODY_BYTES = 256 * 1024
#: items in one ``vitsq bench`` batch
MAX_BENCH_BATCH = 64
#: largest length_scale accepted (slows speech 10x; larger values only cost time and memory)
MAX_LENGTH_SCALE = 10.0
#: model input ids in one utterance (BOS/EOS and blanks included). The VITS2 text encoder's
#: attention is quadratic in this and one utterance is decoded at once: 1000 ids is ~3000
#: frames, ~0.6 GB, at length_scale 1. Longer sentences are split at clause, then word,
#: boundaries (a single longer "word" is cut), never truncated.
MAX_TOKENS_PER_UTTERANCE = 1_000
#: conservative output frames per input id at length_scale 1, for estimating a request's work
#: before running it (the duration predictor is only known after running; the measured mean is
#: ~3, pauses at punctuation are longer)
FRAMES_PER_TOKEN_BOUND = 8
#: estimated frames (ids x length_scale x FRAMES_PER_TOKEN_BOUND) one web request may cause,
#: summed over its variants and utterances: the default 1000-character cap (~2100 ids of
#: English) at length_scale 1 on three variants fits; the same text at length_scale 10 does not
SERVE_MAX_FRAMES = 60_000
#: estimated frames of the largest single utterance of a web request (memory: it is decoded at
#: once); 16000 estimated ~ 6000 real frames ~ 1.2 GB
SERVE_MAX_UTTERANCE_FRAMES = 16_000
#: padded ids (items x longest item) in one backend call of ``synthesize``/``synthesize_batch``:
#: a long text's utterances run in consecutive batches of this size instead of all at once
#: (~200 KB x 3 frames per id ~ 1.2 GB at length_scale 1). ``synthesize_ids_batch`` (the
#: benchmark's padded batches, bounded by ``MAX_BENCH_BATCH``) is not split.
MAX_BATCH_IDS = 2_000

#: largest noise_scale / noise_w accepted (noise costs no time; larger values only make noise)
MAX_NOISE_SCALE = 100.0
