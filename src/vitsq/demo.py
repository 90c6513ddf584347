"""`vitsq demo`: the main job on the embedded voice (grown into the full FP32-vs-INT8 demo)."""

from __future__ import annotations

import argparse
from pathlib import Path

DEMO_TEXT = "Small models can still sound natural. This sentence was synthesized on a CPU."


def run_demo(out_dir: Path, model: str = "joe") -> dict:
    """Synthesize a sample sentence with the torch backend and return its timings."""
    import vitsq

    synth = vitsq.load(model)
    synth.synthesize("Warm up.", seed=0)
    audio = synth.synthesize(DEMO_TEXT, seed=0)
    wav = audio.write(Path(out_dir) / f"{synth.name}_fp32.wav")
    return {"wav": str(wav), "duration": audio.duration, "model_seconds": audio.model_seconds, "rtf": audio.rtf}


def cmd_demo(args: argparse.Namespace) -> int:
    r = run_demo(Path(args.out), args.model)
    print(f"wrote {r['wav']}  duration {r['duration']:.2f} s  model {r['model_seconds']:.3f} s  RTF {r['rtf']:.4f}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("demo", help="run the main job on the embedded voice")
    p.add_argument("--model", default="joe")
    p.add_argument("--out", default="out/demo")
    p.set_defaults(func=cmd_demo)
