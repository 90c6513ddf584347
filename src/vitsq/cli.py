"""`vitsq` command line: each subcommand is a thin layer over one library function.

User errors (:class:`vitsq.errors.VitsqError`) print one line and exit with code 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Sequence

from vitsq.errors import InputError, VitsqError


def _load(args: argparse.Namespace):
    from vitsq.registry import load

    config = getattr(args, "config", None)
    return load(args.model, backend=args.backend, device=args.device,
                      config_path=Path(config) if config else None)


def weights_label(synth) -> str:
    """The model's weights label ("trained", "untrained (random weights)"); "unknown" when the
    model does not say (or cannot describe itself)."""
    try:
        return str(synth.describe().get("weights") or "unknown")
    except Exception as exc:  # a description is informative only: never let it hide the audio
        logging.getLogger(__name__).warning("cannot describe %s: %s", getattr(synth, "name", synth), exc)
        return "unknown"


def synthesis_config(args: argparse.Namespace):
    """The synthesis knobs of the command line as a validated SynthesisConfig."""
    from vitsq.synth import SynthesisConfig

    return SynthesisConfig(speaker=args.speaker, noise_scale=args.noise_scale, length_scale=args.length_scale,
                           noise_w=args.noise_w, seed=args.seed)


def cmd_synth(args: argparse.Namespace) -> int:
    from vitsq.outputs import check_output
    from vitsq.streaming.wav import parse_chunk_frames

    # bad knobs, chunk sizes or an output path that cannot be written fail before the model loads
    config = synthesis_config(args)
    if args.chunk_frames is not None and not args.stream:
        raise InputError("--chunk-frames sets the chunks of a stream: add --stream")
    schedule = parse_chunk_frames(args.chunk_frames) if args.stream else None
    check_output(args.output, kind="file", suffixes=(".wav",), force=args.force, what="output")
    synth = _load(args)
    if args.warmup:
        # the first call pays one-off kernel set-up; keep it out of the printed timings
        first = synth.text_to_ids(args.text)[0]
        if args.stream:
            for _ in synth.stream_ids(first, config, schedule=schedule):
                pass
        else:
            synth.synthesize_ids(first, config)
    if args.stream:
        return _synth_stream(args, synth, config, schedule)
    audio = synth.synthesize(args.text, config)
    out = audio.write(args.output, force=args.force)
    _weights_note(synth)
    print(f"wrote {out}  duration {audio.duration:.2f} s  model {audio.model_seconds:.3f} s  "
          f"front-end {audio.frontend_seconds * 1000:.1f} ms  tokens {audio.num_tokens}  RTF {audio.rtf:.4f}")
    return 0


def _synth_stream(args: argparse.Namespace, synth, config, schedule) -> int:
    """``vitsq synth --stream``: the wav is written chunk by chunk (vitsq.streaming.wav)."""
    from vitsq.streaming.wav import stream_to_wav

    res = stream_to_wav(synth, args.text, args.output, config, schedule=schedule, force=args.force)
    _weights_note(synth)
    print(f"wrote {res.path}  duration {res.duration:.2f} s  "
          f"first audio (TTFA) {res.first_audio_seconds * 1000:.1f} ms  total {res.total_seconds:.3f} s  "
          f"RTF {res.rtf:.4f}  chunks {res.chunks} (streams by {getattr(synth, 'streaming', 'sentences')})")
    return 0


def _weights_note(synth) -> None:
    weights = weights_label(synth)
    if weights == "unknown":
        print(f"note: vitsq cannot tell whether {synth.name} has trained weights")
    elif weights != "trained":
        print(f"note: {synth.name} is {weights}: the audio is not speech")


def cmd_info(args: argparse.Namespace) -> int:
    synth = _load(args)
    d = synth.describe()
    if args.json:
        print(json.dumps(d, indent=2, default=str))
        return 0
    print(f"model       {d['name']}  ({d.get('weights') or 'unknown'})")
    print(f"backend     {d['backend']}")
    print(f"arch        {d['arch']}  decoder {d['decoder']}")
    print(f"sample rate {d['sample_rate']} Hz")
    print(f"speakers    {d['speakers']}")
    print(f"symbols     {d['symbols']}")
    print(f"language    {d['language']}")
    print(f"size        {d['size_bytes'] / 1e6:.2f} MB")
    if d.get("quantization"):
        print(f"quantized   {json.dumps(d['quantization'])}")
    params = d.get("parameters")
    if params:
        print("parameters  (inference model)")
        for k, v in params.items():
            if k != "total":
                print(f"  {k:<10} {v:>12,}")
        print(f"  {'total':<10} {params['total']:>12,}  ({params['total'] / 1e6:.2f} M)")
    for k, v in d.items():
        if k.startswith("note"):
            print(f"{k:<11} {v}")
    return 0


def add_model_args(p: argparse.ArgumentParser, backends: Sequence[str] | None = None) -> None:
    """The model, --backend (default auto: the model's own), --device and --config options."""
    from vitsq.synth import BACKEND_CHOICES

    p.add_argument("model", help="joe, vosk-ru-multi, a voice .onnx, a G_*.pth, a model or artifact folder")
    p.add_argument("--backend", default="auto", choices=list(backends or BACKEND_CHOICES),
                   help="auto (default): the model's own backend (an artifact's kind; torch for checkpoints, "
                        "voices and named models; onnx for a Vosk model folder)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (torch backend)")
    p.add_argument("--config", help="config.json of a checkpoint or voice that is not beside it")


def add_synthesis_args(p: argparse.ArgumentParser) -> None:
    """The SynthesisConfig knobs (validated when the config is built, not by argparse)."""
    p.add_argument("--speaker", type=int, default=None, help="speaker id (multi-speaker models)")
    p.add_argument("--noise-scale", type=float, default=None, help="default: the model's")
    p.add_argument("--length-scale", type=float, default=None, help="default: the model's (> 1 is slower speech)")
    p.add_argument("--noise-w", type=float, default=None, help="default: the model's")
    p.add_argument("--seed", type=int, default=None,
                   help="noise seed, 0..2**64-1 (default: the backend's; ONNX Runtime noise cannot be seeded)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vitsq", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log INFO messages")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="synthesize text to a wav file and print its RTF")
    add_model_args(p)
    p.add_argument("text")
    p.add_argument("-o", "--output", required=True, help="output .wav")
    p.add_argument("--force", action="store_true", help="replace an existing output .wav")
    add_synthesis_args(p)
    p.add_argument("--no-warmup", dest="warmup", action="store_false",
                   help="time the very first call (includes one-off kernel set-up)")
    p.add_argument("--stream", action="store_true",
                   help="synthesize chunk by chunk, writing the wav as chunks arrive; prints the time to first "
                        "audio (TTFA), the total time and the RTF of the whole stream (front-end included)")
    p.add_argument("--chunk-frames", default=None, metavar="SIZES",
                   help="with --stream: latent frames per chunk, e.g. 8 (every chunk) or 4,8,16 (then 16 for every "
                        "later chunk); default 8 doubling to 128. Backends that stream by sentences ignore it")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("info", help="architecture, parameters by submodule, sample rate, speakers, symbols")
    add_model_args(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)

    _register_library_commands(sub)
    return parser


def _register_library_commands(sub: argparse._SubParsersAction) -> None:
    """The subcommands that live next to the library code they wrap (each module's ``register``)."""
    from vitsq.bench import register as register_bench
    from vitsq.demo import register as register_demo
    from vitsq.evaluate.cli import register as register_eval
    from vitsq.export.cli import register as register_export
    from vitsq.quantize.cli import register as register_quantize
    from vitsq.report import register as register_report
    from vitsq.serve.cli import register as register_serve
    from vitsq.tune.cli import register as register_tune

    for register in (register_quantize, register_eval, register_bench, register_export, register_serve,
                     register_report, register_demo, register_tune):
        register(sub)
    sub.choices["bench"].set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    """``vitsq bench``: the RTF benchmark, or with ``--ttfa`` the streaming one. The dispatch sits
    here because the streaming benchmark renders through vitsq.report, which reads bench results:
    vitsq.bench cannot import it without a cycle."""
    if args.ttfa:
        from vitsq.streaming.ttfa import cmd_ttfa

        return cmd_ttfa(args)
    from vitsq.bench import cmd_bench as cmd_rtf

    return cmd_rtf(args)


def _terminate(signum, frame):  # pragma: no cover - exercised through a subprocess test
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # recorded in result files as the command
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    # SIGTERM unwinds like Ctrl-C, so every output's temporary sibling is removed and the
    # previous output stays in place (vitsq.outputs)
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if in_main_thread else None
    try:
        return int(args.func(args) or 0)
    except VitsqError as exc:
        print(f"vitsq {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
