"""`vitsq eval`: a thin CLI layer over :func:`vitsq.evaluate.run.evaluate`."""

from __future__ import annotations

import argparse


def register(sub) -> None:
    """Add the ``eval`` subcommand to the ``vitsq`` subparsers."""
    p = sub.add_parser(
        "eval",
        help="compare model variants with an FP32 reference: Whisper WER/CER, speaker similarity, distance",
        description=(
            "Synthesize the evaluation sentences with MODEL (the FP32 reference) and each VARIANT using the "
            "same speakers and noise seeds, transcribe with Whisper, and report WER, CER, ΔWER with a "
            "paired-bootstrap 95%% CI, speaker similarity, log-mel L1, SNR and MCD."
        ),
    )
    p.add_argument("model", help="reference model: [LABEL=]SPEC[@BACKEND], e.g. joe, joe@onnx, a .onnx voice")
    p.add_argument("variants", nargs="+", metavar="VARIANT",
                   help="[LABEL=]SPEC[@BACKEND], e.g. joe@onnx or int8=out/q@onnx (the old BACKEND:SPEC form "
                        "still works but is deprecated)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--sentences", type=int, default=None, metavar="N",
                     help="use the first N sentences of the shipped evaluation split (default: all of it)")
    src.add_argument("--sentence-file", default=None, metavar="FILE",
                     help="UTF-8 file, one sentence per line ('#' comments)")
    p.add_argument("--speakers", type=int, nargs="+", default=None, metavar="ID",
                   help="speaker ids, assigned to sentences round-robin (default: the single speaker, "
                        "or 4 evenly spread ids)")
    p.add_argument("--seed", type=int, default=0, help="base noise seed; sentence i uses seed + i (default 0)")
    p.add_argument("--asr-model", default=None, metavar="PATH_OR_NAME",
                   help="faster-whisper model folder or name (default: packaged Whisper base)")
    p.add_argument("--asr-download", action="store_true",
                   help="allow faster-whisper to download a named ASR model that is not cached")
    p.add_argument("--backend", default=None, choices=("torch", "onnx", "executorch"),
                   help="backend for specs without @BACKEND (default: each model's own)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--noise-scale", type=float, default=None)
    p.add_argument("--length-scale", type=float, default=None)
    p.add_argument("--noise-w", type=float, default=None)
    p.add_argument("--n-boot", type=int, default=2000, help="bootstrap replicates for the ΔWER CI")
    p.add_argument("--no-cache", action="store_true", help="re-synthesize the reference audio")
    p.add_argument("--out", default="results.json", help="JSON output path (default results.json)")
    p.add_argument("--force", action="store_true", help="replace an existing JSON output of an earlier run")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=run_eval)


def add_eval_parser(subparsers) -> None:
    """Alias of :func:`register`."""
    register(subparsers)


def run_eval(args: argparse.Namespace) -> int:
    """Run the evaluation described by ``args``; print the Markdown table; write JSON.

    Exit 1 (after writing the JSON) when every sentence of some model failed: its scores mean nothing.
    """
    import sys

    from vitsq.jsonutil import invoked_command
    from vitsq.evaluate.run import evaluate
    from vitsq.evaluate.sentences import read_sentence_file

    sentences = read_sentence_file(args.sentence_file) if args.sentence_file else None
    result = evaluate(
        args.model,
        args.variants,
        sentences=sentences,
        speakers=args.speakers,
        seed=args.seed,
        asr_model=args.asr_model,
        asr_download=args.asr_download,
        out=args.out,
        num_sentences=args.sentences,
        backend=args.backend,
        device=args.device,
        noise_scale=args.noise_scale,
        length_scale=args.length_scale,
        noise_w=args.noise_w,
        n_boot=args.n_boot,
        use_cache=not args.no_cache,
        progress=not args.no_progress,
        command=invoked_command(args),
        force=args.force,
    )
    print(result.table())
    print(f"\nwrote {args.out}")
    if result.all_failed:
        print(f"vitsq eval: error: every sentence failed for {', '.join(result.all_failed)} "
              "(see the errors in the JSON)", file=sys.stderr)
        return 1
    return 0
