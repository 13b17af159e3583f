"""A dataset's arrays on one device, at the env's precision, shared by every env that uses them.

``precision="bfloat16"`` stores each feature column centred on its dataset mean in bfloat16
(see :class:`DeviceData`); :func:`cpu_has_bfloat16` tells whether this CPU multiplies bfloat16
natively, as the env warns when it does not.
"""

from __future__ import annotations

import functools
import warnings
import weakref
from dataclasses import dataclass
from pathlib import Path

import torch

from rlmba_env.chunked import CHUNK_ROWS, column_mean
from rlmba_env.data.dataset import MultimodalDataset
from rlmba_env.selection import diversity as diversity_module
from rlmba_env.selection.diversity import DiversitySpace


@dataclass
class DeviceData:
    """A dataset's arrays on one device, built once and shared by every env on that dataset
    and device (the batched vector env's sub-envs, a ``relative`` reward's reference twin).

    With ``precision="float32"`` features keep their storage dtype (float16 stays float16;
    float64 becomes float32) and every consumer converts per chunk. With ``"bfloat16"`` each
    column is centred on its dataset mean and stored in bfloat16 (8 significant bits; centring
    first keeps the rounding relative to a row's deviation, not to a large offset such as
    log-mel energies around -40 dB): half the memory of float32, and the learner's first layer
    and k-means' distance products run as bfloat16 matrix products. Centring changes no
    distance and is absorbed by the learner's own input standardisation. ``diversity`` is step 3's feature space
    (:class:`~rlmba_env.selection.diversity.DiversitySpace`: exact for small pools, randomly
    projected for large pools, see ``DiversitySpace.is_exact``).
    """

    features: dict[str, torch.Tensor]
    diversity: DiversitySpace
    labels: torch.Tensor
    val_rows: torch.Tensor
    test_rows: torch.Tensor


_DEVICE_DATA: dict[tuple, tuple[weakref.ref, weakref.ref]] = {}


def device_data(dataset: MultimodalDataset, device: torch.device, clusters: int,
                precision: str = "float32") -> DeviceData:
    """The :class:`DeviceData` of ``dataset`` on ``device`` for k-means with ``clusters``
    clusters at ``precision``, reused while any env holds it."""
    for key in [k for k, (d, v) in _DEVICE_DATA.items() if d() is None or v() is None]:
        del _DEVICE_DATA[key]
    pool_rows = len(dataset.splits["pool"])
    exact = DiversitySpace.is_exact(pool_rows, clusters)
    key = (id(dataset), str(device), pool_rows, exact, diversity_module.PROJECTION_DIMS, precision)
    if key in _DEVICE_DATA:
        ds_ref, data_ref = _DEVICE_DATA[key]
        data = data_ref()
        if ds_ref() is dataset and data is not None:
            return data
    stored = {}
    for m, x in dataset.features.items():
        t = torch.as_tensor(x, device=device)
        stored[m] = t if t.dtype in (torch.float16, torch.float32) else t.float()
    gemm_dtype = torch.bfloat16 if precision == "bfloat16" else torch.float32
    if precision == "bfloat16" and device.type == "cpu" and cpu_has_bfloat16() is False:
        warnings.warn("precision='bfloat16': this CPU has neither AVX512-BF16 nor AMX, so bfloat16 "
                      "matrix products are emulated and slower than float32; use precision='float32'",
                      stacklevel=3)
    # the diversity space from the stored values, before any rounding to bfloat16
    diversity = DiversitySpace.build(stored, pool_rows, clusters, gemm_dtype=gemm_dtype)
    features = {m: centred_bfloat16(t) for m, t in stored.items()} if precision == "bfloat16" else stored
    del stored
    data = DeviceData(
        features=features,
        diversity=diversity,
        labels=torch.as_tensor(dataset.labels, device=device),
        val_rows=torch.as_tensor(dataset.splits["val"], device=device),
        test_rows=torch.as_tensor(dataset.splits["test"], device=device),
    )
    _DEVICE_DATA[key] = (weakref.ref(dataset), weakref.ref(data))
    return data


@functools.cache
def cpu_has_bfloat16(cpuinfo: str = "/proc/cpuinfo") -> bool | None:
    """Whether this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX); None where the CPU's
    flags cannot be read (not Linux)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return None
    flags = {f for line in text.splitlines() if line.startswith("flags") for f in line.split(":", 1)[1].split()}
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def centred_bfloat16(x: torch.Tensor) -> torch.Tensor:
    """``x`` minus its column means, in bfloat16, converted in row chunks (no float32 copy)."""
    mean = column_mean(x)
    out = torch.empty(x.shape, dtype=torch.bfloat16, device=x.device)
    for lo in range(0, x.shape[0], CHUNK_ROWS):
        out[lo : lo + CHUNK_ROWS] = x[lo : lo + CHUNK_ROWS].float() - mean
    return out
