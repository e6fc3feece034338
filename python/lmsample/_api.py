"""lmsample's Python API: sample() and Sampler. See docs/contract.md for what a row's result is."""

from __future__ import annotations

import threading
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

from . import _lmsample as _ext
from ._frameworks import Framework, framework_named, framework_of, stream_handle

_BACKENDS = {"auto": 0, "cpu": 1, "cuda": 2, "hip": 3}
_GPU_KEYS = {"auto": 0, "on_chip": 1, "stream": 2}
_DTYPES = {"float32": 0, "bfloat16": 1, "float16": 2}

#: Row statuses (lmsample::RowStatus): 0 ok, 1 empty, 2.. a bad parameter.
ROW_OK = 0
ROW_EMPTY = 1
ROW_STATUS_NAMES = tuple(_ext.row_status_name(i) for i in range(11))
_BAD_ROW_PARAM = {
    2: "temperature",
    3: "top_k",
    4: "top_p",
    5: "min_p",
    6: "repetition_penalty",
    7: "frequency_penalty",
    8: "presence_penalty",
}


class _Fallback(Exception):
    """Internal: a fast path hands the call to the general one."""


class BadRowError(ValueError):
    """Raised with raise_on_bad_rows=True when a row has an invalid parameter."""

    def __init__(self, message: str, row: int, status: int):
        super().__init__(message)
        self.row = row
        self.status = status


class SampleResult:
    """What a call returns, as arrays of the logits' framework on the logits' device.

    tokens (int32 [B]; -1 where status != 0), status (int32 [B], see ROW_STATUS_NAMES),
    logprob (float32 [B]) and kept (int32 [B], the size of the kept set) when logprobs=True,
    top_ids / top_logprobs (int32 / float32 [B, n]) when top_logprobs=n > 0; None otherwise.
    """

    __slots__ = ("tokens", "status", "logprob", "kept", "top_ids", "top_logprobs")

    def __init__(self, tokens, status, logprob=None, kept=None, top_ids=None, top_logprobs=None):
        self.tokens = tokens
        self.status = status
        self.logprob = logprob
        self.kept = kept
        self.top_ids = top_ids
        self.top_logprobs = top_logprobs

    def __iter__(self):  # tokens, status = lmsample.sample(...)
        return iter((self.tokens, self.status))

    def __repr__(self) -> str:
        parts = [f"tokens={self.tokens!r}", f"status={self.status!r}"]
        for k in ("logprob", "kept", "top_ids", "top_logprobs"):
            v = getattr(self, k)
            if v is not None:
                parts.append(f"{k}={v!r}")
        return "SampleResult(" + ", ".join(parts) + ")"


def _backend_code(backend: str) -> int:
    try:
        return _BACKENDS[backend]
    except (KeyError, TypeError):
        raise ValueError(
            f"lmsample: backend={backend!r} is not one of 'auto', 'cpu', 'cuda', 'hip'"
        ) from None


def _keys_code(gpu_keys: str) -> int:
    try:
        return _GPU_KEYS[gpu_keys]
    except (KeyError, TypeError):
        raise ValueError(
            f"lmsample: gpu_keys={gpu_keys!r} is not one of 'auto', 'on_chip', 'stream'"
        ) from None


def _is_array(x) -> bool:
    return hasattr(x, "__dlpack__") or hasattr(x, "__array_interface__")


def _history(fw: Framework, h, name: str, batch: int, device):
    """A token history as (offsets, tokens) CSR: from a padded [B, L] int array (entries < 0 are
    padding), a (offsets, tokens) pair, or a list of B token lists (copied from the host)."""
    if h is None:
        return None, None
    if isinstance(h, tuple):
        if len(h) != 2:
            raise ValueError(f"lmsample: {name} as CSR is a pair (offsets int64 [B+1], tokens int32)")
        return h
    if _is_array(h):
        if len(h.shape) != 2 or h.shape[0] != batch:
            raise ValueError(
                f"lmsample: {name} as a padded array must have shape ({batch}, L), "
                f"got {tuple(h.shape)}"
            )
        if str(h.dtype).split(".")[-1] not in ("int32", "int64", "int16", "int8"):
            raise ValueError(f"lmsample: {name} has dtype {h.dtype}; expected an integer dtype")
        return fw.compact(h)
    if isinstance(h, (list, tuple)):
        if len(h) != batch:
            raise ValueError(f"lmsample: {name} as lists needs {batch} lists, got {len(h)}")
        offsets = [0]
        tokens = []
        for row in h:
            tokens.extend(int(t) for t in row)
            offsets.append(len(tokens))
        return fw.asarray(offsets, "int64", device), fw.asarray(tokens, "int32", device)
    raise ValueError(
        f"lmsample: {name} must be a padded [B, L] int array, an (offsets, tokens) CSR pair or a "
        f"list of token lists, got {type(h).__name__}"
    )


def _bias(fw: Framework, bias, batch: int, device):
    """Logit bias as (offsets, tokens, values) CSR: a triple, or a list of B {token: bias} dicts
    (copied from the host)."""
    if bias is None:
        return None, None, None
    if isinstance(bias, tuple):
        if len(bias) != 3:
            raise ValueError(
                "lmsample: logit_bias as CSR is a triple (offsets int64 [B+1], tokens int32, "
                "values float32)"
            )
        return bias
    if isinstance(bias, (list, tuple)):
        if len(bias) != batch:
            raise ValueError(f"lmsample: logit_bias as dicts needs {batch} entries, got {len(bias)}")
        offsets, tokens, values = [0], [], []
        for row in bias:
            if row is None:
                row = {}
            if not isinstance(row, Mapping):
                raise ValueError("lmsample: logit_bias rows must be {token: bias} dicts or None")
            for t, v in row.items():
                tokens.append(int(t))
                values.append(float(v))
            offsets.append(len(tokens))
        return (
            fw.asarray(offsets, "int64", device),
            fw.asarray(tokens, "int32", device),
            fw.asarray(values, "float32", device),
        )
    raise ValueError(
        "lmsample: logit_bias must be an (offsets, tokens, values) CSR triple or a list of dicts"
    )


def _per_row(fw: Framework, x, dtype: str, device):
    """Python lists become arrays on the device; scalars and arrays pass through."""
    if isinstance(x, (list, tuple)):
        return fw.asarray(list(x), dtype, device)
    return x


class _Buffers:
    """Output arrays of one call."""

    __slots__ = ("tokens", "status", "logprob", "kept", "top_ids", "top_logprobs")

    @classmethod
    def allocate(cls, fw: Framework, device, batch: int, logprobs: bool, n_top: int):
        b = cls()
        b.tokens = fw.empty((batch,), "int32", device)
        b.status = fw.empty((batch,), "int32", device)
        b.logprob = fw.empty((batch,), "float32", device) if logprobs else None
        b.kept = fw.empty((batch,), "int32", device) if logprobs else None
        b.top_ids = fw.empty((batch, n_top), "int32", device) if n_top else None
        b.top_logprobs = fw.empty((batch, n_top), "float32", device) if n_top else None
        return b


def _out_buffers(out, batch, logprobs, n_top) -> _Buffers:
    b = _Buffers()
    if isinstance(out, SampleResult):
        src = out
        get = lambda k: getattr(src, k)  # noqa: E731
    elif isinstance(out, Mapping):
        get = out.get
    elif isinstance(out, (tuple, list)):
        names = ("tokens", "status", "logprob", "kept", "top_ids", "top_logprobs")
        vals = dict(zip(names, out))
        get = vals.get
    else:
        raise ValueError("lmsample: out= must be a SampleResult, a dict or a tuple of arrays")
    for k in _Buffers.__slots__:
        setattr(b, k, get(k))
    if b.tokens is None or b.status is None:
        raise ValueError("lmsample: out= needs tokens and status arrays")
    if logprobs and (b.logprob is None or b.kept is None):
        raise ValueError("lmsample: logprobs=True needs out logprob and kept arrays")
    if n_top and (b.top_ids is None or b.top_logprobs is None):
        raise ValueError("lmsample: top_logprobs > 0 needs out top_ids and top_logprobs arrays")
    if not logprobs:
        b.logprob = b.kept = None
    if not n_top:
        b.top_ids = b.top_logprobs = None
    return b


def _describe_bad_row(fw, row: int, status: int, params: Dict[str, Any]) -> str:
    name = _BAD_ROW_PARAM.get(status)
    if name is None:
        return (
            f"row {row}: a logit_bias, prompt_tokens or output_tokens id is outside [0, vocab)"
            if status == 9
            else f"row {row}: {ROW_STATUS_NAMES[status]}"
        )
    value = params.get(name)
    if value is not None and _is_array(value):
        value = fw.to_host_list(value[row])
    return f"row {row}: {name} = {value} is not valid (status {ROW_STATUS_NAMES[status]})"


def _raise_bad_rows(fw, status, params) -> None:
    statuses = fw.to_host_list(status)  # synchronises (raise_on_bad_rows=True only)
    for r, s in enumerate(statuses):
        if s >= 2:
            raise BadRowError(_describe_bad_row(fw, r, s, params), r, s)


def _run(logits, outs, params: Dict[str, Any], n_top: int, workspace, workspace_size: int,
         stream: int, backend: int, gpu_keys: int, cpu_threads: int):
    """One call of the extension for sample() and Sampler.sample()'s general path. `outs`: the
    six outputs (tokens, status, logprob, kept, top_ids, top_logprobs: arrays, the Sampler's
    addresses, or None where not asked); `params`: what _collect made."""
    p = params
    return _ext.sample(
        logits, *outs, p["temperature"], p["top_k"], p["top_p"], p["min_p"],
        p["repetition_penalty"], p["frequency_penalty"], p["presence_penalty"], p["seed"],
        p["step"], p["substream"], p["allowed_mask"], *p["_bias"], *p["_prompt"], *p["_output"],
        n_top, workspace, workspace_size, stream, backend, gpu_keys, cpu_threads,
    )  # fmt: skip


def _collect(
    fw,
    logits,
    device,
    temperature,
    top_k,
    top_p,
    min_p,
    seed,
    step,
    substream,
    repetition_penalty,
    frequency_penalty,
    presence_penalty,
    logit_bias,
    allowed_mask,
    prompt_tokens,
    output_tokens,
):
    batch = logits.shape[0] if len(logits.shape) >= 1 else 0
    return {
        "temperature": _per_row(fw, temperature, "float32", device),
        "top_k": _per_row(fw, top_k, "int32", device),
        "top_p": _per_row(fw, top_p, "float32", device),
        "min_p": _per_row(fw, min_p, "float32", device),
        "seed": _per_row(fw, seed, "int64", device),
        "step": _per_row(fw, step, "int64", device),
        "substream": _per_row(fw, substream, "int32", device),
        "repetition_penalty": _per_row(fw, repetition_penalty, "float32", device),
        "frequency_penalty": _per_row(fw, frequency_penalty, "float32", device),
        "presence_penalty": _per_row(fw, presence_penalty, "float32", device),
        "allowed_mask": allowed_mask,
        "_bias": _bias(fw, logit_bias, batch, device),
        "_prompt": _history(fw, prompt_tokens, "prompt_tokens", batch, device),
        "_output": _history(fw, output_tokens, "output_tokens", batch, device),
    }


_tls = threading.local()


def _workspace_for(fw, device, where, logits, backend, gpu_keys, cpu_threads):
    """A per-thread, per-device workspace that grows as needed (sample() only)."""
    batch, vocab = int(logits.shape[0]), int(logits.shape[1])
    dtype = _DTYPES.get(str(logits.dtype).split(".")[-1], 0)
    need = _ext.workspace_bytes(batch, vocab, dtype, where[0], where[1], backend, gpu_keys, cpu_threads)
    if need == 0:
        return None
    if where[0] != 1:
        # GPU calls are asynchronous and may run on different streams: a fresh workspace per
        # call (the framework's caching allocator makes this cheap and stream-safe)
        return fw.empty((need,), "uint8", device)
    cache = getattr(_tls, "workspaces", None)
    if cache is None:
        cache = _tls.workspaces = {}
    key = (fw.name, str(device))
    ws = cache.get(key)
    if ws is None or ws.shape[0] < need:
        ws = fw.empty((need,), "uint8", device)
        cache[key] = ws
    return ws


def sample(
    logits,
    *,
    temperature=None,
    top_k=None,
    top_p=None,
    min_p=None,
    seed=None,
    step=None,
    substream=None,
    repetition_penalty=None,
    frequency_penalty=None,
    presence_penalty=None,
    logit_bias=None,
    allowed_mask=None,
    prompt_tokens=None,
    output_tokens=None,
    logprobs: bool = False,
    top_logprobs: int = 0,
    out=None,
    stream=None,
    backend: str = "auto",
    gpu_keys: str = "auto",
    cpu_threads: int = 0,
    raise_on_bad_rows: bool = False,
) -> SampleResult:
    """Samples one token per row of `logits` ([B, V] float32 / bfloat16 / float16, any row
    stride, on the CPU or a GPU; a torch tensor, NumPy or CuPy array).

    Each row's token is a pure function of its logits, its parameters, its seed and its step
    (docs/contract.md): the same on every backend, at any batch position.

    Per-row parameters are a Python scalar (one value for every row; no device memory is
    touched for it) or a 1-D array of length B on the logits' device (temperature, top_p, min_p
    and the penalties float32; top_k int32; seed and step int64 or uint64; substream int32), or a
    list. None takes the default (temperature 1, filters off, seed 0, step 0).

    prompt_tokens / output_tokens: a padded [B, L] integer array (entries < 0 are padding,
    compacted on the device without synchronising), an (offsets int64 [B+1], tokens int32) CSR
    pair, or a list of B token lists. logit_bias: an (offsets, tokens, values) CSR triple or a
    list of B {token: bias} dicts. allowed_mask: xgrammar's int32 bitmask [B, ceil(V/32)].
    CSR offsets that you build yourself must not decrease and must stay inside their tokens
    array: that is checked for host arrays; device arrays are read by the kernel as given (the
    padded and list forms build their offsets themselves).

    Returns a SampleResult whose arrays are new arrays of the logits' framework on its device, or
    the arrays of `out=` (a SampleResult, dict or tuple), written in place. On a GPU the call is
    asynchronous on the current stream of the framework (or `stream=`) and never synchronises,
    except with raise_on_bad_rows=True, which reads the statuses back and raises BadRowError for
    the first row with an invalid parameter (on the CPU this costs nothing extra). Errors in
    shapes, dtypes, devices and parameters raise ValueError and write nothing.
    """
    if (
        type(logits).__module__ == "torch"
        and out is None
        and not raise_on_bad_rows
        and logit_bias is None
        and allowed_mask is None
        and prompt_tokens is None
        and output_tokens is None
        and type(top_logprobs) is int
        and 0 <= top_logprobs <= _ext.MAX_TOP_LOGPROBS
        and stream is None
        and len(logits.shape) == 2
        and logits.shape[0] > 0
    ):
        ctx = _torch_context(logits, backend, gpu_keys, cpu_threads)
        if ctx is not None:
            try:
                return ctx._sample_torch(
                    logits, temperature, top_k, top_p, min_p, seed, step, substream,
                    repetition_penalty, frequency_penalty, presence_penalty, logprobs,
                    top_logprobs, None, fresh=True,
                )  # fmt: skip
            except _Fallback:
                pass  # lists: the general path below converts them
    fw = framework_of(logits)
    device = fw.device_of(logits)
    b_code = _backend_code(backend)
    k_code = _keys_code(gpu_keys)
    if not isinstance(top_logprobs, int) or isinstance(top_logprobs, bool):
        raise ValueError(f"lmsample: top_logprobs must be an int, got {top_logprobs!r}")
    if top_logprobs < 0 or top_logprobs > _ext.MAX_TOP_LOGPROBS:
        raise ValueError(
            f"lmsample: top_logprobs = {top_logprobs} is outside [0, {_ext.MAX_TOP_LOGPROBS}]"
        )
    if len(logits.shape) != 2:
        raise ValueError(f"lmsample: logits must be 2-D [batch, vocab], got shape {tuple(logits.shape)}")
    where = fw.where(device)
    params = _collect(
        fw, logits, device, temperature, top_k, top_p, min_p, seed, step, substream,
        repetition_penalty, frequency_penalty, presence_penalty, logit_bias, allowed_mask,
        prompt_tokens, output_tokens,
    )  # fmt: skip
    batch = int(logits.shape[0])
    if out is not None:
        target = _out_buffers(out, batch, logprobs, top_logprobs)
        # a failed call must leave out= untouched: with raise_on_bad_rows the rows are sampled
        # into fresh arrays first
        bufs = (
            _Buffers.allocate(fw, device, batch, logprobs, top_logprobs)
            if raise_on_bad_rows
            else target
        )
    else:
        target = None
        bufs = _Buffers.allocate(fw, device, batch, logprobs, top_logprobs)
    s = stream_handle(stream)
    if s is None:
        s = fw.current_stream(device)
    ws = _workspace_for(fw, device, where, logits, b_code, k_code, cpu_threads)
    outs = (bufs.tokens, bufs.status, bufs.logprob, bufs.kept, bufs.top_ids, bufs.top_logprobs)
    code, message, _ = _run(logits, outs, params, top_logprobs, ws, 0, s, b_code, k_code,
                            cpu_threads)  # fmt: skip
    if raise_on_bad_rows:
        if code == 2:  # CPU: the library names the first bad row
            r = int(message.split(":")[0].split()[-1]) if message.startswith("row ") else -1
            st = int(fw.to_host_list(bufs.status[r])) if r >= 0 else 2
            raise BadRowError("lmsample: " + message, r, st)
        if where[0] != 1:
            _raise_bad_rows(fw, bufs.status, params)
        if target is not None:
            for k in _Buffers.__slots__:
                dst, src = getattr(target, k), getattr(bufs, k)
                if dst is not None and src is not None:
                    dst[...] = src
            bufs = target
    return SampleResult(bufs.tokens, bufs.status, bufs.logprob, bufs.kept, bufs.top_ids, bufs.top_logprobs)


def _maybe_temperature_alone(top_k, top_p, min_p, top_logprobs) -> bool:
    """Whether the library may see a request with temperature and top-p alone (the GPU's
    temperature kernel, which needs a workspace, serves those): False only where top-k or min-p
    is surely on (a scalar that turns it on, or a per-row array, which the library never treats
    as off) or top logprobs are asked for."""
    del top_p  # (top-p alone is the temperature kernel's too)
    if top_logprobs:
        return False
    for v, on in ((top_k, lambda k: k != 0), (min_p, lambda p: p != 0)):
        if v is None:
            continue
        if type(v) in (int, float):
            if on(v):
                return False
            continue
        return False
    return True


def _torch_context(logits, backend, gpu_keys, cpu_threads):
    """A per-thread Sampler for lmsample.sample()'s torch path: it lends its workspace (most
    GPU requests need none) and its checked view of the device; outputs are fresh tensors."""
    b, v = int(logits.shape[0]), int(logits.shape[1])
    dev = logits.get_device()
    key = (dev, v, backend, gpu_keys, cpu_threads)
    cache = getattr(_tls, "torch_contexts", None)
    if cache is None:
        cache = _tls.torch_contexts = {}
    ctx = cache.get(key)
    if ctx is None or ctx.max_batch < b:
        if not 1 <= v <= _ext.MAX_VOCAB:
            return None  # the general path names the problem
        device = logits.device
        ctx = Sampler(
            max(b, 2 * ctx.max_batch if ctx else b), v, device, framework="torch",
            backend=backend, gpu_keys=gpu_keys, cpu_threads=cpu_threads,
        )  # fmt: skip
        cache[key] = ctx
    return ctx


def _addr(x, fw: Framework) -> int:
    if fw.name == "torch":
        return x.data_ptr()
    if fw.name == "cupy":
        return x.data.ptr
    return x.ctypes.data


class Sampler:
    """A sampler for batches of up to `max_batch` rows of `vocab` logits on one device.

    It owns its workspace and its output arrays, allocated once through the framework's
    allocator (torch's caching allocator for torch), so a call allocates nothing: on a GPU it
    launches one kernel on the current stream (or `stream=`) and never synchronises, and it can
    be captured in a torch.cuda.CUDAGraph and replayed with new logits, seeds and steps written
    into the captured input tensors.

    NOTE: the arrays a call returns are views of the sampler's own buffers (the same objects for
    the same batch size): the next call overwrites them. Copy what you keep, or pass out=. For
    the same reason a Sampler serves one stream at a time (its calls share its workspace and
    outputs); use one Sampler per stream.
    """

    def __init__(
        self,
        max_batch: int,
        vocab: int,
        device: Any = "cpu",
        *,
        framework: Optional[str] = None,
        max_top_logprobs: int = 0,
        backend: str = "auto",
        gpu_keys: str = "auto",
        cpu_threads: int = 0,
    ):
        if not isinstance(max_batch, int) or max_batch < 1:
            raise ValueError(f"lmsample: max_batch = {max_batch!r} must be an int >= 1")
        if not isinstance(vocab, int) or not 1 <= vocab <= _ext.MAX_VOCAB:
            raise ValueError(f"lmsample: vocab = {vocab!r} must be an int in [1, {_ext.MAX_VOCAB}]")
        if not 0 <= max_top_logprobs <= _ext.MAX_TOP_LOGPROBS:
            raise ValueError(
                f"lmsample: max_top_logprobs = {max_top_logprobs} is outside [0, {_ext.MAX_TOP_LOGPROBS}]"
            )
        if framework is None:
            if _is_array(device):
                fw = framework_of(device)
                device = fw.device_of(device)
            else:
                import sys

                mod = type(device).__module__.split(".")[0]
                name = "torch" if mod == "torch" or "torch" in sys.modules else None
                if name is None:
                    if str(device) != "cpu":
                        raise ValueError(
                            "lmsample: Sampler(device=...) on a GPU needs framework='torch' or "
                            "'cupy' (or a device object / array of that framework)"
                        )
                    name = "numpy"
                fw = framework_named(name)
        else:
            fw = framework_named(framework)
        if fw.name == "torch":
            device = fw.t.device(device)
            if device.type == "cuda" and device.index is None:
                device = fw.t.device("cuda", fw.t.cuda.current_device())
        self.framework = fw.name
        self.device = device
        self.max_batch = max_batch
        self.vocab = vocab
        self._fw = fw
        self._where = fw.where(device)
        self._backend = _backend_code(backend)
        self._keys = _keys_code(gpu_keys)
        self._threads = int(cpu_threads)
        ws = ws_filtered = 0
        for dt in (0, 1, 2):
            ws = max(ws, _ext.workspace_bytes(max_batch, vocab, dt, self._where[0], self._where[1],
                                              self._backend, self._keys, self._threads))  # fmt: skip
            ws_filtered = max(ws_filtered, _ext.workspace_bytes(
                max_batch, vocab, dt, self._where[0], self._where[1], self._backend, self._keys,
                self._threads, False))  # fmt: skip
        self._ws_size = ws
        self._ws_filtered = ws_filtered  # what requests with a filter need
        self._ws = fw.empty((max(ws, 1),), "uint8", device)
        self._ws_addr = _addr(self._ws, fw)
        self._tokens = fw.empty((max_batch,), "int32", device)
        self._status = fw.empty((max_batch,), "int32", device)
        self._logprob = fw.empty((max_batch,), "float32", device)
        self._kept = fw.empty((max_batch,), "int32", device)
        self._n_top_max = max_top_logprobs
        self._top_ids = fw.empty((max_batch * max(max_top_logprobs, 1),), "int32", device)
        self._top_lp = fw.empty((max_batch * max(max_top_logprobs, 1),), "float32", device)
        self._addrs = tuple(
            _addr(x, fw) for x in (self._tokens, self._status, self._logprob, self._kept,
                                   self._top_ids, self._top_lp)
        )  # fmt: skip
        self._views: Dict[Tuple[int, int], SampleResult] = {}
        self._cuda = self._where[0] != 1
        self._stream_of = fw.current_stream
        self._torch = None
        if fw.name == "torch":
            t = fw.t
            self._torch = t
            self._tensor_type = t.Tensor
            self._logit_dtypes = {t.float32: 0, t.bfloat16: 1, t.float16: 2}
            self._f32 = (t.float32,)
            self._i32 = (t.int32,)
            self._u32 = (t.int32, getattr(t, "uint32", t.int32))
            self._u64 = (t.int64, getattr(t, "uint64", t.int64))
            # get_device(): -1 for host tensors, else the device index
            self._dev_index = -1 if device.type == "cpu" else self._where[1]
            raw_stream = getattr(t._C, "_cuda_getCurrentRawStream", None)
            if raw_stream is None:
                raw_stream = lambda i: t.cuda.current_stream(i).cuda_stream  # noqa: E731
            self._raw_stream = raw_stream

    def _result(self, batch: int, logprobs: bool, n_top: int) -> SampleResult:
        key = (batch, n_top if n_top else (-1 if logprobs else 0))
        r = self._views.get(key)
        if r is None:
            r = SampleResult(
                self._tokens[:batch],
                self._status[:batch],
                self._logprob[:batch] if logprobs else None,
                self._kept[:batch] if logprobs else None,
                self._top_ids[: batch * n_top].reshape(batch, n_top) if n_top else None,
                self._top_lp[: batch * n_top].reshape(batch, n_top) if n_top else None,
            )
            self._views[key] = r
        return r

    def sample(
        self,
        logits,
        *,
        temperature=None,
        top_k=None,
        top_p=None,
        min_p=None,
        seed=None,
        step=None,
        substream=None,
        repetition_penalty=None,
        frequency_penalty=None,
        presence_penalty=None,
        logit_bias=None,
        allowed_mask=None,
        prompt_tokens=None,
        output_tokens=None,
        logprobs: bool = False,
        top_logprobs: int = 0,
        out=None,
        stream=None,
        raise_on_bad_rows: bool = False,
    ) -> SampleResult:
        """As lmsample.sample(), with the sampler's workspace and output buffers (see the class
        note). The logits must be on the sampler's device, with at most max_batch rows of vocab
        logits."""
        if (
            self._torch is not None
            and type(logits) is self._tensor_type
            and out is None
            and not raise_on_bad_rows
            and logit_bias is None
            and allowed_mask is None
            and prompt_tokens is None
            and output_tokens is None
            and 0 <= top_logprobs <= self._n_top_max
            and type(top_logprobs) is int
        ):
            return self._sample_torch(
                logits, temperature, top_k, top_p, min_p, seed, step, substream,
                repetition_penalty, frequency_penalty, presence_penalty, logprobs, top_logprobs,
                stream,
            )  # fmt: skip
        shape = logits.shape
        if len(shape) != 2 or shape[1] != self.vocab or shape[0] > self.max_batch:
            raise ValueError(
                f"lmsample: this Sampler takes logits [<= {self.max_batch}, {self.vocab}], got "
                f"{tuple(shape)}"
            )
        if out is not None or raise_on_bad_rows or top_logprobs > self._n_top_max:
            if top_logprobs > self._n_top_max and out is None:
                raise ValueError(
                    f"lmsample: top_logprobs = {top_logprobs} is above this Sampler's "
                    f"max_top_logprobs = {self._n_top_max}"
                )
            return self._sample_general(
                logits, temperature, top_k, top_p, min_p, seed, step, substream,
                repetition_penalty, frequency_penalty, presence_penalty, logit_bias,
                allowed_mask, prompt_tokens, output_tokens, logprobs, top_logprobs, out, stream,
                raise_on_bad_rows,
            )  # fmt: skip
        fw = self._fw
        batch = shape[0]
        lfw = framework_of(logits)
        if lfw.where(lfw.device_of(logits)) != self._where:
            raise ValueError(
                f"lmsample: the logits are on {lfw.device_of(logits)} but this Sampler's buffers "
                f"are on {self.device}"
            )
        params = _collect(
            fw, logits, self.device, temperature, top_k, top_p, min_p, seed, step, substream,
            repetition_penalty, frequency_penalty, presence_penalty, logit_bias, allowed_mask,
            prompt_tokens, output_tokens,
        )  # fmt: skip
        if stream is None:
            s = self._stream_of(self.device) if self._cuda else 0
        else:
            s = stream_handle(stream)
        a = self._addrs
        outs = (a[0], a[1], a[2] if logprobs else None, a[3] if logprobs else None,
                a[4] if top_logprobs else None, a[5] if top_logprobs else None)  # fmt: skip
        _run(logits, outs, params, top_logprobs, self._ws_addr, self._ws_size, s, self._backend,
             self._keys, self._threads)  # fmt: skip
        return self._result(batch, logprobs, top_logprobs)

    def _raw(self, x, dtypes, batch):
        """A per-row torch tensor as the extension's raw (address,) after the checks the
        extension would make (dtype, 1-D of `batch` elements, contiguous, on the sampler's
        device); anything else is handed to the extension as it is (it reads it through DLPack
        and names what is wrong). About 0.5 us: the cheapest torch accessors that say it."""
        if type(x) is not self._tensor_type:
            if isinstance(x, (list, tuple)):
                raise _Fallback
            return x
        if (
            x.dtype in dtypes
            and x.dim() == 1
            and x.numel() == batch
            and x.get_device() == self._dev_index
            and x.is_contiguous()
        ):
            return (x.data_ptr(),)
        return x

    def _sample_torch(self, logits, temperature, top_k, top_p, min_p, seed, step, substream,
                      repetition_penalty, frequency_penalty, presence_penalty, logprobs,
                      top_logprobs, stream, fresh=False):  # fmt: skip
        """The torch path: the logits and per-row tensors are read through their own
        accessors, not DLPack (a DLPack export of a torch tensor costs about 3 us). With
        fresh=True (lmsample.sample()'s torch path) the outputs are new tensors."""
        shape = logits.shape
        if len(shape) != 2 or shape[1] != self.vocab or shape[0] > self.max_batch:
            raise ValueError(
                f"lmsample: this Sampler takes logits [<= {self.max_batch}, {self.vocab}], got "
                f"{tuple(shape)}"
            )
        b = shape[0]
        ws_addr, ws_size, ws_keep = self._ws_addr, self._ws_size, None
        if fresh and self._cuda and self._ws_size:
            # a workspace shared by calls that may run on different streams would race: a
            # request with temperature alone (the GPU's temperature kernel) gets one per call
            # from the caching allocator, on the current stream (sample()'s fast path only runs
            # on it); one with a filter needs none on most shapes, else takes the general path,
            # which allocates one per call too
            if stream is not None:
                raise _Fallback
            if _maybe_temperature_alone(top_k, top_p, min_p, top_logprobs):
                ws_keep = self._torch.empty(ws_size, dtype=self._torch.uint8, device=self.device)
                ws_addr = ws_keep.data_ptr()
            elif self._ws_filtered == 0:
                ws_addr, ws_size = None, 0
            else:
                raise _Fallback
        dt = self._logit_dtypes.get(logits.dtype)
        dev = logits.get_device()
        if dev != self._dev_index:
            raise ValueError(
                f"lmsample: the logits are on {logits.device} but this Sampler's buffers are on "
                f"{self.device}"
            )
        row_stride, col_stride = logits.stride()
        if dt is None or (col_stride != 1 and b > 0 and shape[1] > 1):
            raw_logits = logits  # the extension names the problem
        else:
            raw_logits = (logits.data_ptr(), dt, b, shape[1], row_stride) + self._where
        raw = self._raw
        try:
            args = (
                temperature if temperature is None or type(temperature) is float
                else raw(temperature, self._f32, b),
                top_k if top_k is None or type(top_k) is int else raw(top_k, self._i32, b),
                top_p if top_p is None or type(top_p) is float
                else raw(top_p, self._f32, b),
                min_p if min_p is None else raw(min_p, self._f32, b),
                repetition_penalty if repetition_penalty is None
                else raw(repetition_penalty, self._f32, b),
                frequency_penalty if frequency_penalty is None
                else raw(frequency_penalty, self._f32, b),
                presence_penalty if presence_penalty is None
                else raw(presence_penalty, self._f32, b),
                seed if seed is None or type(seed) is int else raw(seed, self._u64, b),
                step if step is None or type(step) is int else raw(step, self._u64, b),
                substream if substream is None else raw(substream, self._u32, b),
            )  # fmt: skip
        except _Fallback:
            if fresh:
                raise
            return self._sample_general(
                logits, temperature, top_k, top_p, min_p, seed, step, substream,
                repetition_penalty, frequency_penalty, presence_penalty, None, None, None, None,
                logprobs, top_logprobs, None, stream, False,
            )  # fmt: skip
        if stream is None:
            s = self._raw_stream(self._dev_index) if self._dev_index >= 0 else 0
        else:
            s = stream_handle(stream)
        if fresh:
            t = self._torch
            dev = self.device
            r = SampleResult(
                t.empty(b, dtype=t.int32, device=dev), t.empty(b, dtype=t.int32, device=dev)
            )
            a = [r.tokens.data_ptr(), r.status.data_ptr(), None, None, None, None]
            if logprobs:
                r.logprob = t.empty(b, dtype=t.float32, device=dev)
                r.kept = t.empty(b, dtype=t.int32, device=dev)
                a[2], a[3] = r.logprob.data_ptr(), r.kept.data_ptr()
            if top_logprobs:
                r.top_ids = t.empty((b, top_logprobs), dtype=t.int32, device=dev)
                r.top_logprobs = t.empty((b, top_logprobs), dtype=t.float32, device=dev)
                a[4], a[5] = r.top_ids.data_ptr(), r.top_logprobs.data_ptr()
        else:
            r = None
            a = self._addrs
        _ext.sample(
            raw_logits, a[0], a[1], a[2] if logprobs else None, a[3] if logprobs else None,
            a[4] if top_logprobs else None, a[5] if top_logprobs else None, *args, None, None,
            None, None, None, None, None, None, top_logprobs, ws_addr, ws_size, s,
            self._backend, self._keys, self._threads,
        )  # fmt: skip
        del ws_keep  # (the allocator's stream order keeps it until the kernel has run)
        return r if fresh else self._result(b, logprobs, top_logprobs)

    def _sample_general(self, logits, temperature, top_k, top_p, min_p, seed, step, substream,
                        repetition_penalty, frequency_penalty, presence_penalty, logit_bias,
                        allowed_mask, prompt_tokens, output_tokens, logprobs, top_logprobs, out,
                        stream, raise_on_bad_rows):  # fmt: skip
        return sample(
            logits, temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p, seed=seed,
            step=step, substream=substream, repetition_penalty=repetition_penalty,
            frequency_penalty=frequency_penalty, presence_penalty=presence_penalty,
            logit_bias=logit_bias, allowed_mask=allowed_mask, prompt_tokens=prompt_tokens,
            output_tokens=output_tokens, logprobs=logprobs, top_logprobs=top_logprobs,
            out=out if out is not None else self._result(logits.shape[0], logprobs, top_logprobs),
            stream=stream, backend=[k for k, v in _BACKENDS.items() if v == self._backend][0],
            gpu_keys=[k for k, v in _GPU_KEYS.items() if v == self._keys][0],
            cpu_threads=self._threads, raise_on_bad_rows=raise_on_bad_rows,
        )  # fmt: skip

    def __repr__(self) -> str:
        return (
            f"Sampler(max_batch={self.max_batch}, vocab={self.vocab}, device={self.device!r}, "
            f"framework={self.framework!r}, workspace={self._ws_size} bytes)"
        )


class ChainResult:
    """What verify_chain returns: `accepted` [B] (drafts accepted), `tokens` (the accepted drafts,
    then the recovered or bonus token, then -1: [B, K + 1] for drafts [B, K], else packed like
    the target rows), `status` [B] (ROW_OK, or the status of the position that stopped it), and
    with logprobs=True `logprobs` shaped like `tokens` (each emitted token's, -inf after)."""

    __slots__ = ("accepted", "tokens", "status", "logprobs")

    def __init__(self, accepted, tokens, status, logprobs=None):
        self.accepted, self.tokens, self.status, self.logprobs = accepted, tokens, status, logprobs

    def __repr__(self) -> str:
        return f"ChainResult(accepted={self.accepted!r}, tokens={self.tokens!r})"


def verify_chain(
    target,
    drafts,
    *,
    row_offsets=None,
    draft_probs=None,
    draft_logits=None,
    temperature: Union[float, Sequence[float]] = 1.0,
    top_k: Union[int, Sequence[int]] = 0,
    top_p: Union[float, Sequence[float]] = 1.0,
    min_p: Union[float, Sequence[float]] = 0.0,
    seed: Union[int, Sequence[int]] = 0,
    step: Union[int, Sequence[int]] = 0,
    logprobs: bool = False,
    cpu_threads: int = 0,
) -> ChainResult:
    """Speculative decoding's chain verification (docs/contract.md section 8), on the CPU.

    `drafts` [B, K] (integers) with `target` [B (K + 1), V] logits: request b's target rows are
    b (K + 1) .. b (K + 1) + K. Or `drafts` 1-D [N - B] with `row_offsets` [B + 1] (int64) over
    a target [N, V], so that requests may have different K. `draft_probs` / `draft_logits`
    [N - B, V]: the draft's distribution at each draft (none: deterministic drafts). Parameters
    are scalars or one value per request. Every emitted token is distributed exactly as
    sampling the target alone, and the result is a pure function of the inputs."""
    fw = framework_of(target)
    shape = tuple(int(d) for d in target.shape)
    if len(shape) != 2:
        raise ValueError(f"lmsample.verify_chain: target must be 2-D [N, V], got shape {shape}")
    n = shape[0]
    dshape = tuple(int(d) for d in drafts.shape)
    if row_offsets is None:
        if len(dshape) != 2:
            raise ValueError("lmsample.verify_chain: drafts must be 2-D [B, K] without row_offsets"
                             f", got shape {dshape}")
        b, k = dshape
        if n != b * (k + 1):
            raise ValueError(f"lmsample.verify_chain: target has {n} rows; drafts {dshape} need "
                             f"B (K + 1) = {b * (k + 1)}")
        offsets = fw.asarray([r * (k + 1) for r in range(b + 1)], "int64", "cpu")
        flat = drafts.reshape(-1)
    else:
        offsets = row_offsets
        b = int(row_offsets.shape[0]) - 1
        k = None
        flat = drafts
    if draft_probs is not None and draft_logits is not None:
        raise ValueError("lmsample.verify_chain: give draft_probs or draft_logits, not both")
    kind = 2 if draft_probs is not None else 1 if draft_logits is not None else 0
    draft = draft_probs if draft_probs is not None else draft_logits

    per_request = _per_request(fw, b)

    # (drafts and offsets are small: any integer array, as int32 / int64)
    flat = fw.asarray([int(t) for t in fw.to_host_list(flat)], "int32", "cpu")
    offsets = fw.asarray([int(t) for t in fw.to_host_list(offsets)], "int64", "cpu")

    accepted = fw.empty((b,), "int32", "cpu")
    tokens = fw.empty((n,), "int32", "cpu")
    status = fw.empty((b,), "int32", "cpu")
    lps = fw.empty((n,), "float32", "cpu") if logprobs else None
    _ext.verify_chain(
        target, offsets, flat, kind, draft,
        per_request(temperature, "float32"), per_request(top_k, "int32"),
        per_request(top_p, "float32"), per_request(min_p, "float32"),
        per_request(seed, "int64"), per_request(step, "int64"),
        accepted, tokens, status, lps, cpu_threads)
    if k is not None:
        tokens = tokens.reshape(b, k + 1)
        lps = lps.reshape(b, k + 1) if lps is not None else None
    return ChainResult(accepted, tokens, status, lps)


class TreeResult:
    """What verify_tree returns: `accepted` [B] (nodes accepted below the root), `path` (the
    accepted nodes' indices from the root down, then -1) and `tokens` (their tokens, then the
    token emitted after them, then -1), both packed like the nodes, `status` [B], and with
    logprobs=True `logprobs` like `tokens`."""

    __slots__ = ("accepted", "path", "tokens", "status", "logprobs")

    def __init__(self, accepted, path, tokens, status, logprobs=None):
        self.accepted, self.path, self.tokens = accepted, path, tokens
        self.status, self.logprobs = status, logprobs

    def __repr__(self) -> str:
        return f"TreeResult(accepted={self.accepted!r}, path={self.path!r}, tokens={self.tokens!r})"


def verify_tree(
    target,
    parents,
    tokens,
    node_offsets,
    *,
    temperature: Union[float, Sequence[float]] = 1.0,
    top_k: Union[int, Sequence[int]] = 0,
    top_p: Union[float, Sequence[float]] = 1.0,
    min_p: Union[float, Sequence[float]] = 0.0,
    seed: Union[int, Sequence[int]] = 0,
    step: Union[int, Sequence[int]] = 0,
    logprobs: bool = False,
    cpu_threads: int = 0,
) -> TreeResult:
    """Speculative decoding's tree verification (EAGLE / Medusa token trees of deterministic
    drafts; docs/contract.md section 8), on the CPU. Request b's nodes are node_offsets[b] ..
    node_offsets[b + 1] - 1 (int64 [B + 1]); its first node is the root (parent -1), every other
    node has a parent index (within the request) before it and a draft token; node i's target
    row is target[i] ([N, V] logits). The emitted path is distributed exactly as sampling the
    target alone."""
    fw = framework_of(target)
    n = int(target.shape[0])
    b = int(node_offsets.shape[0]) - 1

    def ints(x, dtype):  # (small integer arrays of any integer type)
        return fw.asarray([int(t) for t in fw.to_host_list(x)], dtype, "cpu")

    accepted = fw.empty((b,), "int32", "cpu")
    path = fw.empty((n,), "int32", "cpu")
    out_tokens = fw.empty((n,), "int32", "cpu")
    status = fw.empty((b,), "int32", "cpu")
    lps = fw.empty((n,), "float32", "cpu") if logprobs else None
    p = _per_request(fw, b)
    _ext.verify_tree(
        target, ints(node_offsets, "int64"), ints(parents, "int32"), ints(tokens, "int32"),
        p(temperature, "float32"), p(top_k, "int32"), p(top_p, "float32"), p(min_p, "float32"),
        p(seed, "int64"), p(step, "int64"), accepted, path, out_tokens, status, lps, cpu_threads)
    return TreeResult(accepted, path, out_tokens, status, lps)


def _per_request(fw: Framework, b: int):
    """Per-request parameters of verify_chain / verify_tree: scalars for every request, lists
    and arrays as given."""

    def make(x, dtype):
        if isinstance(x, (list, tuple)):
            return fw.asarray(list(x), dtype, "cpu")
        return x if _is_array(x) else fw.asarray([x] * b, dtype, "cpu")

    return make


def version() -> str:
    """The library's version."""
    return _ext.version()


def contract_version() -> int:
    """The version of the sampling contract (docs/contract.md) the library implements: one
    contract version gives the same tokens for the same inputs in every build and backend."""
    return _ext.contract_version()


def backend_available(backend: str) -> bool:
    """Whether a backend ('cpu', 'cuda', 'hip') is built in and, for GPUs, has a device."""
    return bool(_ext.backend_available(_backend_code(backend)))
