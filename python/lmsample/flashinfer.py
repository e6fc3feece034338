"""flashinfer.sampling's names and signatures, on lmsample: switching is an import change.

    # from flashinfer.sampling import top_k_top_p_sampling_from_logits
    from lmsample.flashinfer import top_k_top_p_sampling_from_logits
    tokens = top_k_top_p_sampling_from_logits(logits, top_k, top_p, seed=seeds, offset=steps)

Mirrors flashinfer-ai/flashinfer, flashinfer/sampling.py (commit 01c897d, 2025): same argument
names, order and defaults; sampling functions return int32 token ids [B] (the dtype of `indices`
when it is given), or (samples, valid) with return_valid=True.

What is the same and what is not:

* The kept set and the distribution are lmsample's (docs/contract.md); the token is lmsample's
  exact draw, not flashinfer's bits. Each row's token is a pure function of its row, its
  parameters, its seed and its offset: the same on the CPU and on GPUs, at any batch position
  (flashinfer's depends on the row's position in the batch; lmsample's never does).
* ``seed`` is lmsample's ``seed`` and ``offset`` is lmsample's ``step``, verbatim: a Python int or
  a 1-D integer array of length 1 or B on the logits' device (int64 or uint64; other integer
  dtypes are converted). Any distinct (seed, offset) pair gives an independent draw; there is no
  need to advance offset by "the number of random values consumed", though doing so is harmless.
  A negative Python int is taken modulo 2^64, as an int64 tensor's bits are.
* **When seed / offset are not given, they are 0** (flashinfer would draw them from torch's
  generator). Then every call with the same rows returns the same tokens, and two identical rows
  of one batch (e.g. through ``indices``) get the same token. Pass per-request seeds and the
  decoding step as offset.
* ``generator`` (a torch.Generator) is not supported: lmsample keeps no generator state. Passing
  one raises NotImplementedError unless both seed and offset are given, in which case flashinfer
  ignores the generator too, and so do we.
* ``deterministic`` is accepted and ignored: lmsample is always deterministic.
* ``check_nan=True`` raises ValueError when the input holds a NaN, as flashinfer does (this reads a
  flag back from the device). Without it a NaN is an invalid token that is never drawn, and a row
  with no valid token comes back with token -1 (and valid = False); lmsample never hangs on one.
* Per-row ``top_k`` / ``top_p`` / ``min_p``: a Python scalar or a 1-D array of length B (one per
  output row) on the logits' device; length 1 is broadcast. top_k is converted to int32, top_p and
  min_p to float32 (a copy when the dtype differs). top_k = 0 or >= the number of valid tokens
  means no top-k filter; ties at the k-th value are kept, so more than k tokens may be kept.
  An invalid scalar raises ValueError; a row of an array with an invalid value (top_k < 0,
  top_p <= 0 or NaN, min_p outside [0, 1]) gets token -1 and valid = False, without any
  synchronisation.
* ``indices``: output row i is sampled from input row indices[i]. It is done by gathering the rows
  with the framework (a copy of B rows); the per-row parameter, seed and offset arrays are then
  per output row (length len(indices)), which is what flashinfer documents. Indices must lie in
  [0, rows) (checked for host arrays; on a GPU an index out of range is the framework's error).
* From-probs forms sample from log(probs), computed with the framework in float32 at
  temperature 1: log is monotone and softmax(log p) = p / sum(p), so the kept set and the
  distribution are those of the same filters over probs / sum(probs) (to within the contract's
  rounding, docs/contract.md section 1). A zero probability gives log 0 = -inf, an invalid token
  that is never drawn; a negative or NaN probability likewise.
* Inputs that are not float32 / bfloat16 / float16 logits are converted to float32 (a copy).
* ``top_k_mask_logits`` and ``softmax`` are plain framework computations (torch / NumPy ops), not
  lmsample kernels.

Not provided: top_p_renorm_probs, top_k_renorm_probs, chain_speculative_sampling and the rest of
flashinfer.sampling (AttributeError). filter_apply_order="joint" raises NotImplementedError.

Importing this module does not import torch: the framework is that of the arrays passed in.
"""

from __future__ import annotations

import contextlib
import math
import numbers
from typing import Any, Optional, Tuple, Union

from ._api import sample as _sample
from ._frameworks import framework_of

__all__ = [
    "min_p_sampling_from_probs",
    "sampling_from_logits",
    "sampling_from_probs",
    "softmax",
    "top_k_mask_logits",
    "top_k_sampling_from_probs",
    "top_k_top_p_sampling_from_logits",
    "top_k_top_p_sampling_from_probs",
    "top_p_sampling_from_probs",
]

_NOT_PROVIDED = (
    "top_p_renorm_probs",
    "top_p_renorm_prob",
    "top_k_renorm_probs",
    "top_k_renorm_prob",
    "chain_speculative_sampling",
)

_TWO64 = 1 << 64
_NEG_INF = float("-inf")


def __getattr__(name):
    if name in _NOT_PROVIDED:
        raise AttributeError(
            f"lmsample.flashinfer does not provide flashinfer.sampling.{name}; the sampling "
            "functions are: " + ", ".join(__all__)
        )
    raise AttributeError(f"module 'lmsample.flashinfer' has no attribute {name!r}")


# ---------------------------------------------------------------------------------------------
# framework operations (torch, NumPy, CuPy)


def _dtype_name(x) -> str:
    return str(x.dtype).split(".")[-1]


def _is_array(x) -> bool:
    return hasattr(x, "__dlpack__") or hasattr(x, "__array_interface__")


class _TorchOps:
    def __init__(self, fw):
        self.t = fw.t
        self.fw = fw

    def cast(self, x, name):
        dt = getattr(self.t, name)
        return x if x.dtype == dt else x.to(dt)

    def any_nan(self, x) -> bool:
        return bool(self.t.isnan(x).any())

    def log_f32(self, x):
        return self.t.log(x.float())

    def is_host(self, x) -> bool:
        return x.device.type == "cpu"

    def rows(self, x, idx):
        return x.index_select(0, idx if idx.dtype in (self.t.int32, self.t.int64) else idx.long())

    def any_outside(self, idx, n) -> bool:
        return bool(((idx < 0) | (idx >= n)).any())

    def repeat(self, x, n):
        return x.reshape(1).repeat(n)

    def flat1(self, x):
        return x.reshape(1)

    def eq0(self, x):
        return x == 0

    def nan_to_neginf(self, x):
        return x.masked_fill(self.t.isnan(x), _NEG_INF)

    def kth_largest(self, y, k: int):
        return self.t.topk(y, k, dim=1).values[:, k - 1 : k]

    def kth_largest_rows(self, y, k):
        vocab = y.shape[1]
        s = self.t.sort(y, dim=1, descending=True).values
        idx = (k.long().clamp(1, vocab) - 1).unsqueeze(1)
        kth = s.gather(1, idx)
        off = ((k == 0) | (k >= vocab)).unsqueeze(1)
        return kth.masked_fill(off, _NEG_INF), (k >= 0).unsqueeze(1)

    def mask(self, y, keep):
        return y.masked_fill(~keep, _NEG_INF)

    def softmax_f32(self, y):
        return self.t.softmax(y, dim=-1)

    def column(self, v):
        return v.reshape(-1, 1)


class _NumpyOps:
    def __init__(self, fw):
        self.xp = fw.xp
        self.fw = fw

    def _quiet(self):
        errstate = getattr(self.xp, "errstate", None)
        return errstate(all="ignore") if errstate is not None else contextlib.nullcontext()

    def cast(self, x, name):
        return x if _dtype_name(x) == name else x.astype(name)

    def any_nan(self, x) -> bool:
        return bool(self.xp.isnan(x).any())

    def log_f32(self, x):
        with self._quiet():
            return self.xp.log(x.astype(self.xp.float32))

    def is_host(self, x) -> bool:
        return self.fw.name == "numpy"

    def rows(self, x, idx):
        return self.xp.take(x, idx, axis=0)

    def any_outside(self, idx, n) -> bool:
        return bool(((idx < 0) | (idx >= n)).any())

    def repeat(self, x, n):
        return self.xp.repeat(self.xp.reshape(x, (1,)), n)

    def flat1(self, x):
        return self.xp.reshape(self.xp.asarray(x), (1,))

    def eq0(self, x):
        return x == 0

    def nan_to_neginf(self, x):
        return self.xp.where(self.xp.isnan(x), x.dtype.type(_NEG_INF), x)

    def kth_largest(self, y, k: int):
        vocab = y.shape[1]
        return self.xp.partition(y, vocab - k, axis=1)[:, vocab - k : vocab - k + 1]

    def kth_largest_rows(self, y, k):
        xp = self.xp
        vocab = y.shape[1]
        s = xp.sort(y, axis=1)[:, ::-1]
        idx = (xp.clip(k.astype(xp.int64), 1, vocab) - 1).reshape(-1, 1)
        kth = xp.take_along_axis(s, idx, axis=1)
        off = ((k == 0) | (k >= vocab)).reshape(-1, 1)
        return xp.where(off, y.dtype.type(_NEG_INF), kth), (k >= 0).reshape(-1, 1)

    def mask(self, y, keep):
        return self.xp.where(keep, y, y.dtype.type(_NEG_INF))

    def softmax_f32(self, y):
        xp = self.xp
        with self._quiet():
            e = xp.exp(y - y.max(axis=1, keepdims=True))
            return e / e.sum(axis=1, keepdims=True)

    def column(self, v):
        return v.reshape(-1, 1)


def _ops(x):
    fw = framework_of(x)
    return fw, (_TorchOps(fw) if fw.name == "torch" else _NumpyOps(fw))


# ---------------------------------------------------------------------------------------------
# arguments


def _input(fname: str, x, name: str):
    if not _is_array(x):
        raise ValueError(f"{fname}: {name} must be a torch tensor, NumPy or CuPy array")
    fw, ops = _ops(x)
    if len(x.shape) != 2:
        raise ValueError(f"{fname}: {name} must be 2-D (batch, vocab), got shape {tuple(x.shape)}")
    return fw, ops


def _check_scalar(fname: str, name: str, value, kind: str):
    """A Python / NumPy scalar for `name`, validated; returns the Python value."""
    if isinstance(value, bool):
        raise ValueError(f"{fname}: {name} = {value!r} is a bool; expected a number")
    if kind in ("top_k", "seed"):
        if isinstance(value, numbers.Integral):
            v = int(value)
        elif isinstance(value, numbers.Real) and float(value).is_integer():
            v = int(value)
        else:
            raise ValueError(f"{fname}: {name} = {value!r} must be an integer")
        if kind == "top_k":
            if v < 0:
                raise ValueError(f"{fname}: {name} = {v} must be >= 0 (0 means no top-k filter)")
            return min(v, (1 << 31) - 1)
        if not -(1 << 63) <= v < _TWO64:
            raise ValueError(f"{fname}: {name} = {v} is outside [-2^63, 2^64)")
        return v % _TWO64
    if not isinstance(value, numbers.Real):
        raise ValueError(f"{fname}: {name} = {value!r} must be a real number")
    v = float(value)
    if kind == "top_p" and not v > 0:
        raise ValueError(f"{fname}: {name} = {v} must be > 0 (>= 1 means no top-p filter)")
    if kind == "min_p" and not 0 <= v <= 1:
        raise ValueError(f"{fname}: {name} = {v} must be in [0, 1]")
    if kind == "temperature" and not (math.isfinite(v) and v > 0):
        raise ValueError(f"{fname}: {name} = {v} must be finite and > 0")
    return v


_ARRAY_DTYPE = {"top_k": "int32", "top_p": "float32", "min_p": "float32", "temperature": "float32"}


def _param(fname: str, fw, ops, value, name: str, kind: str, batch: int, device):
    """A scalar (validated) or a 1-D array of length `batch` of lmsample's dtype for `kind`."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        dt = "int64" if kind == "seed" else _ARRAY_DTYPE[kind]
        value = fw.asarray(list(value), dt, device)
    if not _is_array(value):
        return _check_scalar(fname, name, value, kind)
    if framework_of(value).name != fw.name:
        raise ValueError(f"{fname}: {name} is a {type(value).__module__} array; the input is {fw.name}")
    if len(value.shape) == 0:
        value = ops.flat1(value)
    if len(value.shape) != 1:
        raise ValueError(f"{fname}: {name} must be 1-D, got shape {tuple(value.shape)}")
    n = int(value.shape[0])
    if n == 1 and batch != 1:
        value = ops.repeat(value, batch)
    elif n != batch:
        raise ValueError(f"{fname}: {name} has length {n}; expected 1 or {batch} (one per output row)")
    dt = _dtype_name(value)
    integer = dt.startswith("int") or dt.startswith("uint")
    if kind == "seed":
        if not integer:
            raise ValueError(f"{fname}: {name} has dtype {dt}; expected an integer dtype (int64, uint64)")
        return value if dt in ("int64", "uint64") else ops.cast(value, "int64")
    if kind == "top_k" and not integer:
        raise ValueError(f"{fname}: {name} has dtype {dt}; expected an integer dtype")
    if kind != "top_k" and not (dt.startswith("float") or dt.startswith("bfloat")):
        raise ValueError(f"{fname}: {name} has dtype {dt}; expected a floating-point dtype")
    return ops.cast(value, _ARRAY_DTYPE[kind])


def _draw(
    fname: str,
    x,
    *,
    from_probs: bool,
    top_k=None,
    top_p=None,
    min_p=None,
    indices=None,
    generator=None,
    check_nan: bool = False,
    seed=None,
    offset=None,
    return_valid: bool = False,
):
    arg = "probs" if from_probs else "logits"
    fw, ops = _input(fname, x, arg)
    if generator is not None and (seed is None or offset is None):
        raise NotImplementedError(
            f"{fname}: generator= (a torch.Generator) is not supported: lmsample keeps no "
            "generator state and draws each row from (seed, step); pass seed= and offset= "
            "(offset is used as lmsample's step) instead"
        )
    if check_nan and ops.any_nan(x):
        raise ValueError(f"{fname}: Input {arg} contains NaN.")
    out_dtype = "int32"
    if indices is not None:
        if not _is_array(indices) or len(indices.shape) != 1:
            raise ValueError(f"{fname}: indices must be a 1-D integer array")
        out_dtype = _dtype_name(indices)
        if out_dtype not in ("int32", "int64"):
            raise ValueError(f"{fname}: indices has dtype {out_dtype}; expected int32 or int64")
        if ops.is_host(indices) and ops.any_outside(indices, int(x.shape[0])):
            raise ValueError(f"{fname}: indices must lie in [0, {int(x.shape[0])})")
        x = ops.rows(x, indices)
    if from_probs:
        x = ops.log_f32(x)
    elif _dtype_name(x) not in ("float32", "bfloat16", "float16"):
        x = ops.cast(x, "float32")
    batch = int(x.shape[0])
    device = fw.device_of(x)
    p = lambda v, name, kind: _param(fname, fw, ops, v, name, kind, batch, device)  # noqa: E731
    r = _sample(
        x,
        top_k=p(top_k, "top_k", "top_k"),
        top_p=p(top_p, "top_p", "top_p"),
        min_p=p(min_p, "min_p", "min_p"),
        seed=p(0 if seed is None else seed, "seed", "seed"),
        step=p(0 if offset is None else offset, "offset", "seed"),
    )
    tokens = r.tokens if out_dtype == "int32" else ops.cast(r.tokens, out_dtype)
    if return_valid:
        return tokens, ops.eq0(r.status)
    return tokens


def _check_order(fname: str, filter_apply_order: str):
    if filter_apply_order == "joint":
        raise NotImplementedError(
            f"{fname}: filter_apply_order='joint' is not supported: lmsample applies top-k first "
            "and then top-p over the renormalised top-k set (filter_apply_order='top_k_first')"
        )
    if filter_apply_order != "top_k_first":
        raise ValueError(f"{fname}: Invalid filter_apply_order: {filter_apply_order!r}")


# ---------------------------------------------------------------------------------------------
# flashinfer.sampling's functions


def softmax(
    logits,
    temperature: Optional[Union[Any, float]] = None,
    enable_pdl: Optional[bool] = None,
):
    """softmax(logits / temperature) along the vocabulary, in float32: a plain framework
    computation (torch.softmax, or NumPy's max-subtracted exp / sum), not an lmsample kernel.

    temperature: None (1), a finite scalar > 0, or a 1-D array of length B (one per row; converted
    to float32). enable_pdl is a flashinfer launch hint with no effect on the values: ignored.
    A row with no finite logit gives NaN, as the frameworks do. Works on the CPU and on GPUs.
    """
    fname = "lmsample.flashinfer.softmax"
    fw, ops = _input(fname, logits, "logits")
    y = ops.cast(logits, "float32")
    if temperature is not None:
        t = _param(fname, fw, ops, temperature, "temperature", "temperature", int(y.shape[0]),
                   fw.device_of(y))  # fmt: skip
        y = y / (ops.column(t) if _is_array(t) else t)
    return ops.softmax_f32(y)


def sampling_from_logits(
    logits,
    indices=None,
    deterministic: bool = True,
    generator=None,
    check_nan: bool = False,
    seed=None,
    offset=None,
):
    """One token per row from softmax(logits): lmsample.sample(logits, seed=seed, step=offset) at
    temperature 1 with no filter (see the module docstring for seed, offset, indices, generator,
    check_nan). Returns int32 token ids [B] (indices' dtype when given); -1 for a row with no
    valid (finite or +inf) logit."""
    return _draw(
        "lmsample.flashinfer.sampling_from_logits", logits, from_probs=False, indices=indices,
        generator=generator, check_nan=check_nan, seed=seed, offset=offset,
    )  # fmt: skip


def sampling_from_probs(
    probs,
    indices=None,
    deterministic: bool = True,
    generator=None,
    check_nan: bool = False,
    seed=None,
    offset=None,
    return_valid: bool = False,
):
    """One token per row from probs / sum(probs): lmsample.sample(log(probs), seed=seed,
    step=offset) with log computed by the framework in float32; the distribution is
    softmax(log(probs)), the token lmsample's exact draw. Zero probabilities are never drawn.
    Returns int32 token ids [B] (-1 for a row with no positive probability), or (samples, valid)
    with return_valid=True, valid = the row was sampled (lmsample status 0)."""
    return _draw(
        "lmsample.flashinfer.sampling_from_probs", probs, from_probs=True, indices=indices,
        generator=generator, check_nan=check_nan, seed=seed, offset=offset,
        return_valid=return_valid,
    )  # fmt: skip


def top_p_sampling_from_probs(
    probs,
    top_p,
    indices=None,
    deterministic: bool = True,
    generator=None,
    check_nan: bool = False,
    seed=None,
    offset=None,
    return_valid: bool = False,
):
    """Top-p (nucleus) sampling from probs: lmsample.sample(log(probs), top_p=top_p, seed=seed,
    step=offset). The kept set and the distribution equal those of lmsample's top-p over
    softmax(log(probs)) = probs / sum(probs): the smallest set of highest tokens whose mass reaches
    top_p, with ties at its lowest value kept; the token is lmsample's exact draw, not flashinfer's
    bits. top_p: scalar > 0 or float array [B] (>= 1: no filter). Returns int32 token ids [B], or
    (samples, valid) with return_valid=True."""
    return _draw(
        "lmsample.flashinfer.top_p_sampling_from_probs", probs, from_probs=True, top_p=top_p,
        indices=indices, generator=generator, check_nan=check_nan, seed=seed, offset=offset,
        return_valid=return_valid,
    )  # fmt: skip


def top_k_sampling_from_probs(
    probs,
    top_k,
    indices=None,
    deterministic: bool = True,
    generator=None,
    check_nan: bool = False,
    seed=None,
    offset=None,
    return_valid: bool = False,
):
    """Top-k sampling from probs: lmsample.sample(log(probs), top_k=top_k, seed=seed,
    step=offset). The kept set is the tokens whose probability is >= the k-th largest (ties kept,
    so it may hold more than k tokens), drawn with probability proportional to probs; the token is
    lmsample's exact draw. top_k: int >= 0 or integer array [B] (converted to int32); 0 or >= the
    number of positive probabilities: no filter. Returns int32 token ids [B], or (samples, valid)
    with return_valid=True."""
    return _draw(
        "lmsample.flashinfer.top_k_sampling_from_probs", probs, from_probs=True, top_k=top_k,
        indices=indices, generator=generator, check_nan=check_nan, seed=seed, offset=offset,
        return_valid=return_valid,
    )  # fmt: skip


def min_p_sampling_from_probs(
    probs,
    min_p,
    indices=None,
    deterministic: bool = True,
    generator=None,
    check_nan: bool = False,
    seed=None,
    offset=None,
    return_valid: bool = False,
):
    """Min-p sampling from probs: lmsample.sample(log(probs), min_p=min_p, seed=seed,
    step=offset). The kept set is the tokens with p >= min_p * max(p) (evaluated as lmsample does,
    on exp(log p - log p_max)), drawn with probability proportional to probs; the token is
    lmsample's exact draw. min_p: scalar in [0, 1] or float array [B]. Returns int32 token ids [B],
    or (samples, valid) with return_valid=True."""
    return _draw(
        "lmsample.flashinfer.min_p_sampling_from_probs", probs, from_probs=True, min_p=min_p,
        indices=indices, generator=generator, check_nan=check_nan, seed=seed, offset=offset,
        return_valid=return_valid,
    )  # fmt: skip


def top_k_top_p_sampling_from_logits(
    logits,
    top_k,
    top_p,
    indices=None,
    filter_apply_order: str = "top_k_first",
    deterministic: bool = True,
    generator=None,
    check_nan: bool = False,
    seed=None,
    offset=None,
):
    """Top-k then top-p sampling from logits: lmsample.sample(logits, top_k=top_k, top_p=top_p,
    seed=seed, step=offset) at temperature 1. This is flashinfer's filter_apply_order=
    "top_k_first" (top-p over the renormalised top-k set), lmsample's processing order;
    "joint" raises NotImplementedError. Ties at the k-th logit are kept. Returns int32 token ids
    [B] (indices' dtype when given)."""
    fname = "lmsample.flashinfer.top_k_top_p_sampling_from_logits"
    _check_order(fname, filter_apply_order)
    return _draw(
        fname, logits, from_probs=False, top_k=top_k, top_p=top_p, indices=indices,
        generator=generator, check_nan=check_nan, seed=seed, offset=offset,
    )  # fmt: skip


def top_k_top_p_sampling_from_probs(
    probs,
    top_k,
    top_p,
    indices=None,
    filter_apply_order: str = "top_k_first",
    deterministic: bool = True,
    generator=None,
    check_nan: bool = False,
    seed=None,
    offset=None,
    return_valid: bool = False,
):
    """Top-k then top-p sampling from probs: lmsample.sample(log(probs), top_k=top_k,
    top_p=top_p, seed=seed, step=offset). The kept set and the distribution equal those of
    lmsample's top-k then top-p over softmax(log(probs)) = probs / sum(probs) (flashinfer's
    filter_apply_order="top_k_first"; "joint" raises NotImplementedError); the token is lmsample's
    exact draw. Returns int32 token ids [B], or (samples, valid) with return_valid=True."""
    fname = "lmsample.flashinfer.top_k_top_p_sampling_from_probs"
    _check_order(fname, filter_apply_order)
    return _draw(
        fname, probs, from_probs=True, top_k=top_k, top_p=top_p, indices=indices,
        generator=generator, check_nan=check_nan, seed=seed, offset=offset,
        return_valid=return_valid,
    )  # fmt: skip


def top_k_mask_logits(logits, top_k):
    """logits with every token outside the row's top-k set set to -inf (a new array of the same
    dtype): a plain framework computation (torch.topk / torch.sort, NumPy partition / sort).

    The top-k set is lmsample's (docs/contract.md, step 8): with NaN read as -inf, the tokens whose
    logit is >= the k-th largest, counted with multiplicity; every token tied with the k-th value
    is kept. top_k: int >= 0 or an integer array [B]; 0 or >= V keeps the row whole (NaN still
    becomes -inf). A row of an array whose k is negative comes back all -inf (nothing is kept), as
    lmsample gives such a row no token; a negative scalar raises ValueError.
    """
    fname = "lmsample.flashinfer.top_k_mask_logits"
    fw, ops = _input(fname, logits, "logits")
    batch, vocab = int(logits.shape[0]), int(logits.shape[1])
    k = _param(fname, fw, ops, top_k, "top_k", "top_k", batch, fw.device_of(logits))
    y = ops.nan_to_neginf(logits)
    if not _is_array(k):
        if k == 0 or k >= vocab:
            return y
        return ops.mask(y, y >= ops.kth_largest(y, k))
    kth, row_ok = ops.kth_largest_rows(y, k)
    return ops.mask(y, (y >= kth) & row_ok)
