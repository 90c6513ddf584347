"""Profile a vitsq ExecuTorch artifact (encoder.pte + decoder.pte) with ExecuTorch's ETDump.

Runs the programs through the same host code as the ``executorch`` backend (zero noise, the
voice's length scale, speaker 0, one XNNPACK thread) on the first ``-n`` sentences of the
English evaluation split, ``--repeats`` times, with event tracing on; prints each program's
execute time and its time per XNNPACK operator kind (``Convolution (NHWC, QC8) IGEMM``,
``Transpose (ND, X32)``, ...) and per portable kernel (``native_call_*``), summed over all runs.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/int8/pte_study.py out/bench/joe-pte-int8
"""

from __future__ import annotations

import argparse
import re
import tempfile
from collections import Counter
from pathlib import Path

_SKIP = ("Method::execute", "Program::load_method", "Method::init", "DELEGATE_CALL", "OPERATOR_CALL")


class _TracedMethod:
    """The ``execute(inputs)`` interface of ``executorch.runtime`` methods, over a module loaded
    with ETDump tracing."""

    def __init__(self, module) -> None:
        self.module = module

    def execute(self, inputs):
        return self.module.run_method("forward", tuple(inputs))


def profile(directory: Path, n: int, repeats: int, top: int) -> None:
    import vitsq
    from executorch.devtools import Inspector
    from executorch.extension.pybindings import portable_lib

    from vitsq.backends.executorch import DECODER_FILE, ENCODER_FILE, run_programs
    from vitsq.evaluate.sentences import load_split

    synth = vitsq.load(str(directory), threads=1)  # loads the quantized kernels and sizes the pool
    modules = {name: portable_lib._load_for_executorch(str(directory / f), enable_etdump=True)
               for name, f in (("encoder", ENCODER_FILE), ("decoder", DECODER_FILE))}
    scales = (0.0, synth.resolve().length_scale, 0.0)
    pieces = [ids for text in load_split("en", "evaluation")[:n] for ids in synth.text_to_ids(text)]
    for _ in range(repeats):
        for ids in pieces:
            run_programs(_TracedMethod(modules["encoder"]), _TracedMethod(modules["decoder"]), synth.config,
                         ids, 0, 0, scales, synth.max_frames)
    with tempfile.TemporaryDirectory() as tmp:
        for name, module in modules.items():
            path = str(Path(tmp) / f"{name}.etdump")
            module.write_etdump_result_to_file(path)
            totals: Counter = Counter()
            for block in Inspector(etdump_path=path).event_blocks:
                for event in block.events:
                    if event.perf_data is not None:
                        totals[re.sub(r" #\d+$", "", event.name)] += sum(event.perf_data.raw)
            run = totals["Method::execute"]
            print(f"{name}: execute {run / repeats:.1f} ms per pass over {len(pieces)} sentences")
            for kind, ms in [kv for kv in totals.most_common() if kv[0] not in _SKIP][:top]:
                print(f"   {kind:56s} {ms / repeats:8.2f} {100 * ms / run:5.1f} %")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("directory", type=Path, help="a vitsq ExecuTorch artifact folder")
    ap.add_argument("-n", type=int, default=4, help="evaluation sentences")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--top", type=int, default=16)
    args = ap.parse_args()
    profile(args.directory, args.n, args.repeats, args.top)


if __name__ == "__main__":
    main()
