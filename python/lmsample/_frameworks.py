"""The caller's array framework: outputs and workspaces are allocated through it, on the logits'
device, so that results come back as tensors of the input's framework (torch, NumPy, CuPy).

Nothing here imports a framework the caller has not imported already: torch, CuPy and JAX are
looked up in sys.modules.
"""

from __future__ import annotations

import sys
from typing import Any, Optional, Tuple

DEVICE_CPU = 1
DEVICE_CUDA = 2
DEVICE_ROCM = 10


class Framework:
    """What lmsample needs of an array framework."""

    name = "?"

    def empty(self, shape, dtype: str, device) -> Any:
        raise NotImplementedError

    def device_of(self, x) -> Any:
        raise NotImplementedError

    def where(self, device) -> Tuple[int, int]:
        """(DLPack device type, index) of a device of this framework."""
        raise NotImplementedError

    def current_stream(self, device) -> int:
        return 0

    def asarray(self, values, dtype: str, device) -> Any:
        raise NotImplementedError

    def to_host_list(self, x) -> list:
        raise NotImplementedError


class Torch(Framework):
    name = "torch"

    def __init__(self, torch):
        self.t = torch
        self.dtypes = {
            "int32": torch.int32,
            "int64": torch.int64,
            "uint8": torch.uint8,
            "float32": torch.float32,
            "bool": torch.bool,
        }
        self._raw_stream = getattr(torch._C, "_cuda_getCurrentRawStream", None)

    def empty(self, shape, dtype, device):
        return self.t.empty(shape, dtype=self.dtypes[dtype], device=device)

    def device_of(self, x):
        return x.device

    def where(self, device):
        device = self.t.device(device)
        if device.type == "cpu":
            return DEVICE_CPU, 0
        if device.type == "cuda":
            index = device.index if device.index is not None else self.t.cuda.current_device()
            return (DEVICE_ROCM if self.t.version.hip else DEVICE_CUDA), index
        raise ValueError(f"lmsample: unsupported torch device {device}")

    def current_stream(self, device):
        if device.type != "cuda":
            return 0
        index = device.index if device.index is not None else self.t.cuda.current_device()
        if self._raw_stream is not None:
            return self._raw_stream(index)
        return self.t.cuda.current_stream(index).cuda_stream

    def asarray(self, values, dtype, device):
        return self.t.as_tensor(values, dtype=self.dtypes[dtype]).to(device)

    def to_host_list(self, x):
        return x.tolist()

    # padded [B, L] histories -> CSR, on the device, with no host synchronisation
    def compact(self, h):
        t = self.t
        b, length = h.shape
        valid = h >= 0
        flat_valid = valid.reshape(-1)
        offsets = t.zeros(b + 1, dtype=t.int64, device=h.device)
        t.cumsum(valid.sum(1), 0, out=offsets[1:])
        pos = t.cumsum(flat_valid, 0) - 1
        dest = t.where(flat_valid, pos, t.full_like(pos, b * length))
        tokens = t.empty(b * length + 1, dtype=t.int32, device=h.device)
        tokens.scatter_(0, dest, h.reshape(-1).to(t.int32))
        return offsets, tokens


class NumpyLike(Framework):
    """NumPy, and CuPy (which has NumPy's API)."""

    def __init__(self, xp, name):
        self.xp = xp
        self.name = name

    def empty(self, shape, dtype, device):
        if self.name == "cupy":
            with self.xp.cuda.Device(device):
                return self.xp.empty(shape, dtype=dtype)
        return self.xp.empty(shape, dtype=dtype)

    def device_of(self, x):
        return x.device.id if self.name == "cupy" else "cpu"

    def where(self, device):
        if self.name == "cupy":
            return DEVICE_CUDA, int(device)
        return DEVICE_CPU, 0

    def current_stream(self, device):
        if self.name == "cupy":
            return self.xp.cuda.get_current_stream().ptr
        return 0

    def asarray(self, values, dtype, device):
        if self.name == "cupy":
            with self.xp.cuda.Device(device):
                return self.xp.asarray(values, dtype=dtype)
        return self.xp.asarray(values, dtype=dtype)

    def to_host_list(self, x):
        return x.tolist()

    def compact(self, h):
        xp = self.xp
        b = h.shape[0]
        valid = h >= 0
        offsets = xp.zeros(b + 1, dtype=xp.int64)
        offsets[1:] = xp.cumsum(valid.sum(axis=1))
        tokens = xp.ascontiguousarray(h[valid]).astype(xp.int32)
        return offsets, tokens


_cache: dict = {}


def framework_of(x) -> Framework:
    """The framework an array belongs to (torch, numpy or cupy)."""
    module = type(x).__module__.split(".")[0]
    fw = _cache.get(module)
    if fw is not None:
        return fw
    if module == "torch":
        fw = Torch(sys.modules["torch"])
    elif module == "numpy":
        fw = NumpyLike(sys.modules["numpy"], "numpy")
    elif module == "cupy":
        fw = NumpyLike(sys.modules["cupy"], "cupy")
    elif module in ("jax", "jaxlib"):
        raise ValueError(
            "lmsample: JAX arrays are immutable, so lmsample cannot write its outputs into "
            "them; pass the logits through DLPack as torch, CuPy or NumPy arrays "
            "(e.g. torch.from_dlpack(x)) and convert the results back"
        )
    else:
        raise ValueError(
            f"lmsample: logits of type {type(x).__module__}.{type(x).__name__} are not "
            "supported: pass a torch tensor, a NumPy array or a CuPy array"
        )
    _cache[module] = fw
    return fw


def framework_named(name: str) -> Framework:
    if name == "torch":
        import torch  # noqa: F401
    elif name == "numpy":
        import numpy  # noqa: F401
    elif name == "cupy":
        import cupy  # noqa: F401
    else:
        raise ValueError(f"lmsample: unknown framework {name!r} (torch, numpy or cupy)")
    module = sys.modules[name]
    fw = _cache.get(name)
    if fw is None:
        fw = Torch(module) if name == "torch" else NumpyLike(module, name)
        _cache[name] = fw
    return fw


def stream_handle(stream: Optional[Any]) -> Optional[int]:
    """A raw cudaStream_t / hipStream_t from an int, a torch.cuda.Stream or a CuPy stream."""
    if stream is None:
        return None
    if isinstance(stream, int):
        return stream
    for attr in ("cuda_stream", "ptr"):
        v = getattr(stream, attr, None)
        if isinstance(v, int):
            return v
    raise ValueError(
        f"lmsample: stream= must be an int handle, a torch.cuda.Stream or a CuPy stream, "
        f"got {type(stream).__name__}"
    )
