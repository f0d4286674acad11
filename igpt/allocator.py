"""glibc malloc settings for XLA:CPU, applied by re-executing the CLI before jax loads.

XLA's worker threads allocate the large attention buffers through many malloc arenas and
mmap; each step then page-faults its buffers back in (the figures: benchmarks/RESULTS.md and
../shared/JAX-STACK-NOTES.md). The variables only
take effect at process start, hence the re-exec. IGPT_NO_MALLOC_TUNING=1 turns it off.
"""
from __future__ import annotations

import os
import sys

SETTINGS = {
    "MALLOC_ARENA_MAX": "1",
    "MALLOC_MMAP_MAX_": "0",
    "MALLOC_TRIM_THRESHOLD_": "17179869184",
    "MALLOC_TOP_PAD_": "268435456",
}


def reexec_with_malloc_settings(module: str) -> None:
    """Restarts `python -m module argv...` with SETTINGS in the environment, once."""
    if os.environ.get("IGPT_NO_MALLOC_TUNING") or all(os.environ.get(k) == v for k, v in SETTINGS.items()):
        return
    if not sys.platform.startswith("linux"):
        return
    env = dict(os.environ, **SETTINGS)
    os.execve(sys.executable, [sys.executable, "-m", module, *sys.argv[1:]], env)
