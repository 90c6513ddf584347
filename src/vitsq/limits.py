"""Every bound on the work one input may cause, in one place (documented in docs/limits.md).

A request that exceeds a bound is refused up front with an error naming the bound and the
value asked for; nothing here is a silent truncation.
"""

from __future__ import annotations

#: characters in one ``synthesize`` text (the library and the CLI)
MAX_TEXT_CHARS = 20_000
#: characters in one web request (the server's default; ``vitsq serve --max-chars``)
SERVE_MAX_CHARS = 1_000
#: bytes of one HTTP request body, checked before the body is read
SERVE_MAX_BODY_BYTES = 64 * 1024
#: items in one ``vitsq bench`` batch
MAX_BENCH_BATCH = 64
#: largest length_scale accepted (slows speech 10x; larger values only cost time and memory)
MAX_LENGTH_SCALE = 10.0
