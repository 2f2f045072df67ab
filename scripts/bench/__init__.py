"""Benchmark the AWR building blocks and the whole training command against plain PyTorch / raw gymnasium.

    python scripts/benchmark.py                                  # the five component sections, a few minutes
    python scripts/benchmark.py --quick --json /tmp/bench.json   # CI smoke test, < 60 s
    python scripts/benchmark.py --sections update --profile 25   # + cProfile of our update step
    python scripts/benchmark.py --sections end_to_end            # the default command, 204,800 frames (~10 min)

Sections (``--sections``, comma-separated), one module each:

* ``update`` (:mod:`bench.update`): one AWR actor step and one critic step (batch 256, HalfCheetah-v5 sizes)
  through ``AWRLoss.actor_loss``/``value_loss`` + the optimizer, minibatches indexed out of a 50k TensorDict
  snapshot as ``RegressionPhase`` does, against the same math in plain PyTorch on plain tensors
  (:class:`bench.plain.PlainAWR`, loaded with our weights; ``tests/test_benchmark.py`` checks that both compute
  the same losses and gradients).
* ``learner`` (:mod:`bench.learner`): a whole learner phase (200 critic + 1000 actor steps, 50k buffer) through the
  ``RegressionPhase`` hooks, with SGD + momentum and with Adam, eager and compiled (one graph per update step, the
  default) and, with ``device=cuda``, CUDA-graphed, against plain-PyTorch phases on the same device.
* ``relabel`` (:mod:`bench.update`): ``torchrl_awr.relabel`` over a full (wrapped) 50k-transition buffer.
* ``collection`` (:mod:`bench.collection`): frames/s of our collector against raw gymnasium loops.
* ``iteration`` (:mod:`bench.iteration`): a full AWR iteration through ``build_trainer`` with a full 50k buffer,
  its split, and the projected wall time for 1M frames.
* ``end_to_end`` (:mod:`bench.end_to_end`, only when named): ``scripts/train_mujoco.py`` with the defaults for
  ``--frames`` frames against a plain-PyTorch AWR loop with the same settings (:mod:`bench.plain`), each a process
  of its own: wall time, frames/s and the final evaluation return of both.

Every figure is a median over ``--repeats``; each ratio is the median of per-repeat ratios of two
measurements taken back to back, so a neighbouring job slows both sides alike. The Markdown table
goes to stdout, the JSON to ``--json``. ``key=value`` arguments override the config of every section.
"""
