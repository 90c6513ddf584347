"""``vitsq tune``: search the recipe space of one voice for the fastest (or smallest) INT8 recipe
that passes a quality gate, in local worker processes or as Ray tasks on a cluster.

* :mod:`vitsq.tune.space` -- the search space as data, candidates, pruning, the quality gate and
  the search strategy (sensitivity-guided greedy, then seeded random candidates);
* :mod:`vitsq.tune.trial` -- one trial: build the candidate, time it against FP32 in the same
  process (interleaved), evaluate it on the tuning split with an early gate;
* :mod:`vitsq.tune.runner` -- the search driver, the results file (JSONL, resumable), the local
  and Ray executors;
* :mod:`vitsq.tune.preset` -- ``DIR/best``: the winner as a preset that ``vitsq quantize MODEL
  --recipe DIR/best`` rebuilds byte for byte;
* :mod:`vitsq.tune.report` -- the Pareto front, its plot and the Markdown report;
* :mod:`vitsq.tune.cli` -- the ``vitsq tune`` subcommand.

Importing this package imports neither torch nor Ray. Design and usage: docs/tune.md.
"""
