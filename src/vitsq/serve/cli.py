"""`vitsq serve`: start the A/B listening page on loopback."""

from __future__ import annotations

import argparse

from vitsq.serve.app import DEFAULT_MAX_CHARS, DEFAULT_MODELS, check_host, create_app


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    host = check_host(args.host)
    if not 1 <= args.port <= 65535:
        from vitsq.errors import InputError

        raise InputError(f"port {args.port} is not valid: use 1..65535")
    models = args.models or list(DEFAULT_MODELS)
    print(f"loading {len(models)} model(s): {', '.join(models)}")
    app = create_app(models, max_chars=args.max_chars, workers=args.workers)
    for e in app.state.entries:
        print(f"  {e.id:<20} {e.label}")
    print(f"open http://{'[::1]' if host == '::1' else host}:{args.port}/  (API docs at /docs)")
    uvicorn.run(app, host=host, port=args.port, log_level="warning")
    return 0


def register(sub) -> None:
    p = sub.add_parser("serve", help="A/B listening web page over loaded models (loopback only)",
                       description="Serve a page comparing models side by side. Each model is "
                                   "[LABEL=]SPEC[@BACKEND], e.g. joe joe@onnx int8=out/joe-int8.")
    p.add_argument("models", nargs="*", help=f"models/artifacts to compare (default: {' '.join(DEFAULT_MODELS)})")
    p.add_argument("--host", default="127.0.0.1", help="loopback address to bind (127.0.0.1, localhost, ::1)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-chars", type=int, default=DEFAULT_MAX_CHARS, help="text length cap per request")
    p.add_argument("--workers", type=int, default=2, help="synthesis worker threads")
    p.set_defaults(func=cmd_serve)
