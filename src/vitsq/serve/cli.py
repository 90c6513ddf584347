"""`vitsq serve`: start the A/B listening page on loopback."""

from __future__ import annotations

import argparse
import socket

from vitsq.errors import InputError
from vitsq.serve.app import DEFAULT_MAX_CHARS, DEFAULT_MODELS, check_host, create_app


def bind_port(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port``, before any model loads; InputError when the port is taken.

    Binding here (and handing the socket to uvicorn) leaves no window for another process to take
    the port between the check and the server start.
    """
    if not 1 <= port <= 65535:
        raise InputError(f"port {port} is not valid: use 1..65535")
    family = socket.AF_INET6 if host == "::1" else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does; a listener still conflicts
    try:
        sock.bind(("127.0.0.1" if host == "localhost" else host, port))
    except OSError as exc:
        sock.close()
        raise InputError(f"cannot listen on {host}:{port}: {exc.strerror or exc} (is another server running "
                         "there? choose another --port)") from None
    return sock


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    host = check_host(args.host)
    sock = bind_port(host, args.port)
    try:
        models = args.models or list(DEFAULT_MODELS)
        print(f"loading {len(models)} model(s): {', '.join(models)}")
        app = create_app(models, max_chars=args.max_chars, workers=args.workers)
        for e in app.state.entries:
            print(f"  {e.id:<20} {e.label}")
        print(f"open http://{'[::1]' if host == '::1' else host}:{args.port}/  (API docs at /docs)")
        uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
    finally:
        sock.close()
    return 0


def register(sub) -> None:
    p = sub.add_parser("serve", help="A/B listening web page over loaded models (loopback only)",
                       description="Serve a page comparing models side by side; it plays each variant as its "
                                   "audio arrives (POST /api/stream) and shows its time to first audio. Each "
                                   "model is [LABEL=]SPEC[@BACKEND], e.g. joe joe@onnx int8=out/joe-int8.")
    p.add_argument("models", nargs="*", help=f"models/artifacts to compare (default: {' '.join(DEFAULT_MODELS)})")
    p.add_argument("--host", default="127.0.0.1", help="loopback address to bind (127.0.0.1, localhost, ::1)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-chars", type=int, default=DEFAULT_MAX_CHARS,
                   help="text length cap per request (at most vitsq.limits.MAX_TEXT_CHARS)")
    p.add_argument("--workers", type=int, default=2, help="synthesis worker threads")
    p.set_defaults(func=cmd_serve)
