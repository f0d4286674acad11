"""Peak dense bf16 FLOP/s of known accelerators, for the MFU figure (None when unknown)."""
from __future__ import annotations

import jax

# Dense (not sparse) bf16 peak per chip, from the vendors' data sheets.
PEAK_BF16_FLOPS = {
    "H100": 989e12,   # SXM
    "H200": 989e12,
    "A100": 312e12,
    "TPU v4": 275e12,
    "TPU v5 lite": 197e12,  # v5e
    "TPU v5p": 459e12,
    "TPU v6 lite": 918e12,  # Trillium
}


def peak_flops_per_device(device: jax.Device | None = None) -> float | None:
    kind = (device or jax.devices()[0]).device_kind
    for name, flops in PEAK_BF16_FLOPS.items():
        if name.lower() in kind.lower():
            return flops
    return None
