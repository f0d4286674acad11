"""Transfer report from metrics files only: curves, speedups with honest intervals, claims.

  collect.py   find run and experiment directories; read metrics.jsonl and run.json into runs
  analysis.py  each arm at its best rate (validation) against scratch and the best control (test)
  figures.py   loss curves and speedup against the target loss, as PNGs
  render.py    words, tables, report.html and report.md
  publish.py   write_report (the out dir swapped in whole, summary.json) and the terminal headline
Never imports jax, so it runs on a laptop over copied metrics. Losses are shown, and targets
are given, in bits per token.
"""
from igpt.transfer.report.publish import headline, write_report

__all__ = ["headline", "write_report"]
