"""Cross-modal transfer: start a run from another modality's checkpoint and measure the gain.

  arms.py        what an arm names: the scratch baseline, or a source and an init mode
  init.py        what each mode carries over from the source and what it trains (jax)
  experiment.py  arms x learning rates x seeds, pretraining each source once (jax)
  metrics.py     steps to a loss, per-seed speedups, targets, learning-rate choice (pure numpy)
  intervals.py   per-seed speedups pooled: geometric mean, t-interval or range, censored seeds
  comparison.py  arms against scratch and against the best control, target by target
  report/        collect -> analysis -> figures -> render -> publish; never imports jax

Importing this package imports nothing else, so the report runs on a laptop.
"""
