"""lmsample.flashinfer: flashinfer.sampling's signatures on lmsample. NumPy tests run anywhere; the
torch tests run where torch is installed, the CUDA ones where a GPU is."""

import inspect
import subprocess
import sys

import numpy as np
import pytest

import lmsample
import lmsample.flashinfer as fi
from conftest import random_logits

# Mirrors flashinfer.sampling's public signatures as of flashinfer-ai/flashinfer
# flashinfer/sampling.py, commit 01c897d7075594003c411c0aa5e3befdf0bcae94 (2025).
_COMMON = [
    ("deterministic", True),
    ("generator", None),
    ("check_nan", False),
    ("seed", None),
    ("offset", None),
]
FLASHINFER_SIGNATURES = {
    "softmax": [("logits", inspect.Parameter.empty), ("temperature", None), ("enable_pdl", None)],
    "sampling_from_logits": [("logits", inspect.Parameter.empty), ("indices", None)] + _COMMON,
    "sampling_from_probs": [("probs", inspect.Parameter.empty), ("indices", None)]
    + _COMMON
    + [("return_valid", False)],
    "top_p_sampling_from_probs": [
        ("probs", inspect.Parameter.empty),
        ("top_p", inspect.Parameter.empty),
        ("indices", None),
    ]
    + _COMMON
    + [("return_valid", False)],
    "top_k_sampling_from_probs": [
        ("probs", inspect.Parameter.empty),
        ("top_k", inspect.Parameter.empty),
        ("indices", None),
    ]
    + _COMMON
    + [("return_valid", False)],
    "min_p_sampling_from_probs": [
        ("probs", inspect.Parameter.empty),
        ("min_p", inspect.Parameter.empty),
        ("indices", None),
    ]
    + _COMMON
    + [("return_valid", False)],
    "top_k_top_p_sampling_from_logits": [
        ("logits", inspect.Parameter.empty),
        ("top_k", inspect.Parameter.empty),
        ("top_p", inspect.Parameter.empty),
        ("indices", None),
        ("filter_apply_order", "top_k_first"),
    ]
    + _COMMON,
    "top_k_top_p_sampling_from_probs": [
        ("probs", inspect.Parameter.empty),
        ("top_k", inspect.Parameter.empty),
        ("top_p", inspect.Parameter.empty),
        ("indices", None),
        ("filter_apply_order", "top_k_first"),
    ]
    + _COMMON
    + [("return_valid", False)],
    "top_k_mask_logits": [("logits", inspect.Parameter.empty), ("top_k", inspect.Parameter.empty)],
}

# name -> (takes probs, extra positional args, the lmsample.sample filters they mean)
SAMPLERS = {
    "sampling_from_logits": (False, (), {}),
    "sampling_from_probs": (True, (), {}),
    "top_p_sampling_from_probs": (True, (0.8,), {"top_p": 0.8}),
    "top_k_sampling_from_probs": (True, (20,), {"top_k": 20}),
    "min_p_sampling_from_probs": (True, (0.05,), {"min_p": 0.05}),
    "top_k_top_p_sampling_from_logits": (False, (20, 0.8), {"top_k": 20, "top_p": 0.8}),
    "top_k_top_p_sampling_from_probs": (True, (20, 0.8), {"top_k": 20, "top_p": 0.8}),
}
WITH_VALID = [n for n in SAMPLERS if "return_valid" in dict(FLASHINFER_SIGNATURES[n])]


def np_softmax(x):
    x = x.astype(np.float64)
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def np_log(p):
    with np.errstate(divide="ignore"):
        return np.log(p.astype(np.float32))


def inputs(rng, batch=8, vocab=1000):
    x = random_logits(rng, batch, vocab)
    return x, np_softmax(x)


def call(name, x, p, *args, **kw):
    probs, extra, _ = SAMPLERS[name]
    return getattr(fi, name)(p if probs else x, *(args or extra), **kw)


def reference(name, x, p, **kw):
    """What the function means: lmsample.sample on the logits, or on log(probs)."""
    probs, _, filters = SAMPLERS[name]
    return lmsample.sample(np_log(p) if probs else x, backend="cpu", **filters, **kw).tokens


# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(FLASHINFER_SIGNATURES))
def test_signature_mirrors_flashinfer(name):
    params = inspect.signature(getattr(fi, name)).parameters
    got = [(n, p.default) for n, p in params.items()]
    assert got == FLASHINFER_SIGNATURES[name]
    assert all(p.kind == inspect.Parameter.POSITIONAL_OR_KEYWORD for p in params.values())
    assert name in fi.__all__


def test_not_provided_functions_say_so():
    for name in ("top_p_renorm_probs", "top_k_renorm_probs", "chain_speculative_sampling"):
        with pytest.raises(AttributeError, match="lmsample.flashinfer does not provide"):
            getattr(fi, name)
    assert not hasattr(fi, "no_such_function")
    assert lmsample.flashinfer is fi


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_equals_lmsample_sample_bit_for_bit(name):
    rng = np.random.default_rng(1)
    x, p = inputs(rng)
    seeds = rng.integers(0, 2**62, 8).astype(np.int64)
    steps = rng.integers(0, 1000, 8).astype(np.int64)
    got = call(name, x, p, seed=seeds, offset=steps)
    assert isinstance(got, np.ndarray) and got.dtype == np.int32 and got.shape == (8,)
    np.testing.assert_array_equal(got, reference(name, x, p, seed=seeds, step=steps))
    # scalars too
    np.testing.assert_array_equal(
        call(name, x, p, seed=5, offset=9), reference(name, x, p, seed=5, step=9)
    )


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_seed_and_offset_select_the_draw(name):
    rng = np.random.default_rng(2)
    x = np.zeros((16, 1000), np.float32)  # flat rows: a different draw is a different token
    p = np_softmax(x)
    a = call(name, x, p, seed=11, offset=3)
    np.testing.assert_array_equal(a, call(name, x, p, seed=11, offset=3))
    assert (a != call(name, x, p, seed=11, offset=4)).any()
    assert (a != call(name, x, p, seed=12, offset=3)).any()
    # without seed / offset: seed 0, step 0 (documented)
    np.testing.assert_array_equal(call(name, x, p), call(name, x, p, seed=0, offset=0))
    # scalars of one row == arrays; per-row seeds make identical rows differ
    per_row = call(name, x, p, seed=np.arange(16, dtype=np.int64), offset=np.full(16, 3, np.int64))
    assert len(set(per_row.tolist())) > 1
    assert len(set(a.tolist())) == 1  # one scalar seed: identical rows, identical tokens
    del rng


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_row_token_does_not_depend_on_batch_position(name):
    rng = np.random.default_rng(3)
    x, p = inputs(rng, batch=8)
    seeds = rng.integers(0, 2**62, 8).astype(np.int64)
    offsets = rng.integers(0, 1000, 8).astype(np.int64)
    batch = call(name, x, p, seed=seeds, offset=offsets)
    for r in (0, 5):
        alone = call(name, x[r : r + 1], p[r : r + 1], seed=int(seeds[r]), offset=int(offsets[r]))
        assert alone.shape == (1,) and alone[0] == batch[r]
        alone_arr = call(name, x[r : r + 1], p[r : r + 1], seed=seeds[r : r + 1], offset=offsets[r : r + 1])
        assert alone_arr[0] == batch[r]
    # row 5 moved to row 0 of a shuffled batch
    perm = np.array([5, 0, 1, 2, 3, 4, 6, 7])
    moved = call(name, x[perm], p[perm], seed=seeds[perm], offset=offsets[perm])
    np.testing.assert_array_equal(moved, batch[perm])


def test_scalars_arrays_and_dtypes_agree():
    rng = np.random.default_rng(4)
    x, p = inputs(rng)
    b = x.shape[0]
    ref = fi.top_k_top_p_sampling_from_probs(p, 20, 0.8, seed=7, offset=1)
    for top_k in (np.full(b, 20, np.int64), np.full(b, 20, np.int32), np.array([20]), [20] * b):
        for top_p in (np.full(b, 0.8, np.float64), np.full(b, 0.8, np.float32), np.float32(0.8)):
            got = fi.top_k_top_p_sampling_from_probs(
                p, top_k, top_p, seed=np.full(b, 7, np.uint64), offset=np.array([1], np.int32)
            )
            np.testing.assert_array_equal(got, ref)
    # 0 and k >= V mean no top-k filter; top_p >= 1 no top-p filter
    plain = fi.sampling_from_probs(p, seed=7, offset=1)
    np.testing.assert_array_equal(fi.top_k_sampling_from_probs(p, 0, seed=7, offset=1), plain)
    np.testing.assert_array_equal(fi.top_k_sampling_from_probs(p, 1 << 30, seed=7, offset=1), plain)
    np.testing.assert_array_equal(fi.top_p_sampling_from_probs(p, 1.0, seed=7, offset=1), plain)
    # top_k = 1 keeps the highest probability (and its ties: row 7 is near flat)
    for s in range(10):
        t = fi.top_k_sampling_from_probs(p, 1, seed=s, offset=1)
        np.testing.assert_array_equal(p[np.arange(b), t], p.max(axis=1))
    np.testing.assert_array_equal(t[:4], np.argmax(p[:4], axis=1))
    # float64 logits are converted to float32
    np.testing.assert_array_equal(
        fi.sampling_from_logits(x.astype(np.float64), seed=3, offset=2),
        fi.sampling_from_logits(x, seed=3, offset=2),
    )
    # a negative seed is taken modulo 2^64, as an int64 array's bits are
    np.testing.assert_array_equal(
        fi.sampling_from_logits(x, seed=-1, offset=2),
        fi.sampling_from_logits(x, seed=np.full(b, -1, np.int64), offset=2),
    )
    np.testing.assert_array_equal(
        fi.sampling_from_logits(x, seed=-1, offset=2), fi.sampling_from_logits(x, seed=2**64 - 1, offset=2)
    )


def test_probs_zero_never_drawn_and_unnormalised_probs():
    rng = np.random.default_rng(5)
    p = rng.random((4, 64)).astype(np.float32)
    p[:, ::2] = 0.0
    seeds = np.arange(4, dtype=np.int64)
    seen = set()
    for step in range(200):
        t = fi.sampling_from_probs(p, seed=seeds, offset=step)
        assert (t % 2 == 1).all()
        seen.update(t.tolist())
        # scaling probs does not change the distribution, nor (here, a power of two) the draw
        np.testing.assert_array_equal(t, fi.sampling_from_probs(p * 4.0, seed=seeds, offset=step))
    assert len(seen) > 20


def test_min_p_keeps_exactly_the_tokens_above_min_p_times_max():
    p = np.array([[0.5, 0.3, 0.1, 0.06, 0.04]], np.float32)  # min_p 0.15 keeps p >= 0.075
    seen = {int(fi.min_p_sampling_from_probs(p, 0.15, seed=s, offset=0)[0]) for s in range(300)}
    assert seen == {0, 1, 2}


def test_indices_gather_rows():
    rng = np.random.default_rng(6)
    x, p = inputs(rng, batch=4)
    for dtype in (np.int32, np.int64):
        idx = np.array([3, 0, 3, 1, 1, 2], dtype)
        seeds = np.arange(6, dtype=np.int64)
        for name in SAMPLERS:
            got = call(name, x, p, indices=idx, seed=seeds, offset=4)
            assert got.dtype == dtype and got.shape == (6,)
            np.testing.assert_array_equal(got, call(name, x[idx], p[idx], seed=seeds, offset=4))
        with pytest.raises(ValueError, match="indices"):
            fi.sampling_from_logits(x, indices=np.array([0, 4], dtype))
        with pytest.raises(ValueError, match="indices"):
            fi.sampling_from_logits(x, indices=np.array([-1], dtype))
    with pytest.raises(ValueError, match="indices"):
        fi.sampling_from_logits(x, indices=np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="offset"):  # per output row: length 6, not 4
        fi.sampling_from_logits(x, indices=np.array([0, 1, 2, 3, 0, 1]), seed=0, offset=np.zeros(4, np.int64))


def test_generator_joint_and_filter_order():
    rng = np.random.default_rng(7)
    x, p = inputs(rng)
    for name in SAMPLERS:
        with pytest.raises(NotImplementedError, match="generator"):
            call(name, x, p, generator=object())
        with pytest.raises(NotImplementedError, match="generator"):
            call(name, x, p, generator=object(), seed=1)
        # with both seed and offset the generator is unused, as in flashinfer
        np.testing.assert_array_equal(
            call(name, x, p, generator=object(), seed=1, offset=2), call(name, x, p, seed=1, offset=2)
        )
        # deterministic=False is accepted: lmsample is always deterministic
        np.testing.assert_array_equal(
            call(name, x, p, deterministic=False, seed=1, offset=2), call(name, x, p, seed=1, offset=2)
        )
    for f, a in ((fi.top_k_top_p_sampling_from_logits, x), (fi.top_k_top_p_sampling_from_probs, p)):
        with pytest.raises(NotImplementedError, match="joint"):
            f(a, 20, 0.8, filter_apply_order="joint")
        with pytest.raises(ValueError, match="filter_apply_order"):
            f(a, 20, 0.8, filter_apply_order="top_p_first")


def test_nan_check_nan_and_return_valid():
    rng = np.random.default_rng(8)
    x, p = inputs(rng, batch=3, vocab=100)
    x[0, :50] = np.nan
    x[1, :] = np.nan
    p[0, :50] = np.nan
    p[1, :] = np.nan
    for name in SAMPLERS:
        probs = SAMPLERS[name][0]
        with pytest.raises(ValueError, match="NaN"):
            call(name, x, p, check_nan=True)
        for s in range(20):
            t = call(name, x, p, seed=s, offset=0)
            assert 50 <= t[0] < 100 and t[1] == -1 and 0 <= t[2] < 100
        if name in WITH_VALID:
            t, valid = call(name, x, p, seed=3, offset=0, return_valid=True)
            assert valid.dtype == np.bool_
            np.testing.assert_array_equal(valid, [True, False, True])
            np.testing.assert_array_equal(t, call(name, x, p, seed=3, offset=0))
        del probs
    clean = inputs(rng, batch=2, vocab=10)
    assert fi.sampling_from_logits(clean[0], check_nan=True).shape == (2,)


@pytest.mark.parametrize(
    "name, args, match",
    [
        ("top_p_sampling_from_probs", (0.0,), "top_p"),
        ("top_p_sampling_from_probs", (float("nan"),), "top_p"),
        ("top_p_sampling_from_probs", (-0.5,), "top_p"),
        ("top_k_sampling_from_probs", (-1,), "top_k"),
        ("top_k_sampling_from_probs", (2.5,), "top_k"),
        ("top_k_sampling_from_probs", (True,), "top_k"),
        ("top_k_sampling_from_probs", (np.array([1.0, 2.0]),), "top_k"),
        ("min_p_sampling_from_probs", (1.5,), "min_p"),
        ("min_p_sampling_from_probs", (-0.1,), "min_p"),
        ("min_p_sampling_from_probs", (np.array([0.1, 0.1, 0.1]),), "min_p"),  # length 3 != 2
        ("top_k_top_p_sampling_from_probs", (5, np.array([1, 1])), "top_p"),  # integer top_p
        ("top_k_top_p_sampling_from_logits", (5, "0.9"), "top_p"),
    ],
)
def test_invalid_parameters_raise(name, args, match):
    rng = np.random.default_rng(9)
    x, p = inputs(rng, batch=2, vocab=50)
    with pytest.raises(ValueError, match=match):
        call(name, x, p, *args)


def test_invalid_seed_offset_and_shapes_raise():
    x = np.zeros((2, 10), np.float32)
    for kw, match in [
        (dict(seed=1.5), "seed"),
        (dict(offset=2**64), "offset"),
        (dict(offset=-(2**63) - 1), "offset"),
        (dict(seed=np.zeros(2, np.float32)), "seed"),
        (dict(seed=np.zeros(3, np.int64)), "seed"),
        (dict(offset=np.zeros((2, 1), np.int64)), "offset"),
    ]:
        with pytest.raises(ValueError, match=match):
            fi.sampling_from_logits(x, **kw)
    with pytest.raises(ValueError, match="2-D"):
        fi.sampling_from_logits(np.zeros(10, np.float32))
    with pytest.raises(ValueError, match="probs"):
        fi.sampling_from_probs([[0.5, 0.5]])


def test_bad_rows_of_arrays_get_minus_one_and_invalid():
    rng = np.random.default_rng(10)
    x, p = inputs(rng, batch=4, vocab=50)
    t, valid = fi.top_k_top_p_sampling_from_probs(
        p, np.array([5, -1, 5, 5]), np.array([0.9, 0.9, 0.0, 0.9]), seed=1, offset=1, return_valid=True
    )
    np.testing.assert_array_equal(valid, [True, False, False, True])
    assert t[1] == -1 and t[2] == -1 and t[0] >= 0 and t[3] >= 0
    np.testing.assert_array_equal(
        t[[0, 3]], fi.top_k_top_p_sampling_from_probs(p[[0, 3]], 5, 0.9, seed=1, offset=1)
    )


# ---- top_k_mask_logits / softmax ------------------------------------------------------------


def brute_top_k_mask(x, ks):
    y = np.where(np.isnan(x), -np.inf, x)
    out = np.full_like(y, -np.inf)
    for r, k in enumerate(ks):
        if k < 0:
            continue
        if k == 0 or k >= y.shape[1]:
            out[r] = y[r]
            continue
        kth = np.sort(y[r])[::-1][k - 1]
        keep = y[r] >= kth
        out[r, keep] = y[r, keep]
    return out


def test_top_k_mask_logits_keeps_exactly_the_top_k_set_with_ties():
    rng = np.random.default_rng(11)
    x = random_logits(rng, 8, 500)  # row 1 and 5: quantised, many exact ties
    x[2, 10:20] = np.nan
    for k in (1, 7, 40, 499):
        got = fi.top_k_mask_logits(x, k)
        assert got.dtype == x.dtype and got.shape == x.shape
        np.testing.assert_array_equal(got, brute_top_k_mask(x, [k] * 8))
        kept = np.isfinite(got).sum(axis=1)
        assert (kept >= np.minimum(k, np.isfinite(x).sum(axis=1))).all()  # row 2: 490 valid
        assert np.isneginf(got[2, 10:20]).all()
        assert kept[0] == k  # a Gaussian row has no ties
    assert (np.isfinite(fi.top_k_mask_logits(x, 40)).sum(axis=1)[[1, 5]] > 40).all()  # ties kept
    ks = np.array([0, 1, 3, -1, 500, 10**6, 40, 2], np.int64)
    got = fi.top_k_mask_logits(x, ks)
    np.testing.assert_array_equal(got, brute_top_k_mask(x, ks))
    assert np.isneginf(got[3]).all()
    np.testing.assert_array_equal(got[0], x[0])
    np.testing.assert_array_equal(fi.top_k_mask_logits(x, ks.astype(np.int32)), got)
    with pytest.raises(ValueError, match="top_k"):
        fi.top_k_mask_logits(x, -1)
    with pytest.raises(ValueError, match="top_k"):
        fi.top_k_mask_logits(x, np.zeros(3, np.int32))
    # fp16 keeps its dtype
    h = x.astype(np.float16)
    got16 = fi.top_k_mask_logits(h, 7)
    assert got16.dtype == np.float16
    np.testing.assert_array_equal(got16, brute_top_k_mask(h, [7] * 8))


def test_top_k_mask_logits_matches_lmsample_top_k_draws():
    """The masked row, sampled with no filter, gives lmsample's top-k draw bit for bit: the same
    kept set with the same weights."""
    rng = np.random.default_rng(12)
    x = random_logits(rng, 8, 2000)
    seeds = rng.integers(0, 2**62, 8).astype(np.int64)
    for k in (1, 5, 50):
        for step in range(5):
            masked = fi.sampling_from_logits(fi.top_k_mask_logits(x, k), seed=seeds, offset=step)
            direct = lmsample.sample(x, top_k=k, seed=seeds, step=step).tokens
            np.testing.assert_array_equal(masked, direct)


def test_softmax():
    rng = np.random.default_rng(13)
    x = random_logits(rng, 6, 300)
    for t in (None, 0.5, 1.0, 2.0):
        got = fi.softmax(x, t)
        assert got.dtype == np.float32 and got.shape == x.shape
        np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=0, atol=1e-5)
        np.testing.assert_allclose(got, np_softmax(x / (1.0 if t is None else t)), rtol=1e-5, atol=1e-7)
    ts = np.array([0.5, 1, 2, 0.7, 1.3, 3], np.float64)
    got = fi.softmax(x, ts, enable_pdl=True)
    np.testing.assert_allclose(got, np_softmax(x / ts[:, None]), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(fi.softmax(x.astype(np.float16)).sum(axis=1), 1.0, atol=1e-5)
    for bad in (0.0, -1.0, float("nan"), float("inf"), np.ones(5, np.float32), np.ones(6, np.int32)):
        with pytest.raises(ValueError, match="temperature"):
            fi.softmax(x, bad)


def test_import_does_not_import_torch():
    pytest.importorskip("torch")
    code = "import sys, lmsample.flashinfer; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


# ---- torch ----------------------------------------------------------------------------------


def _torch():
    return pytest.importorskip("torch")


def _cuda(torch):
    if not torch.cuda.is_available():
        pytest.skip("torch.cuda.is_available() is False: no GPU here")
    if not lmsample.backend_available("cuda"):
        pytest.skip("this lmsample build has no CUDA backend (LMSAMPLE_CUDA=OFF)")
    return torch.device("cuda")


def test_torch_cpu_equals_numpy():
    torch = _torch()
    rng = np.random.default_rng(14)
    x, p = inputs(rng)
    seeds = rng.integers(0, 2**62, 8).astype(np.int64)
    tx, tp, ts = torch.from_numpy(x), torch.from_numpy(p), torch.from_numpy(seeds)
    for name in SAMPLERS:
        got = call(name, tx, tp, seed=ts, offset=torch.tensor([3]))
        assert isinstance(got, torch.Tensor) and got.dtype == torch.int32
        np.testing.assert_array_equal(got.numpy(), call(name, x, p, seed=seeds, offset=3))
    k = torch.full((8,), 20, dtype=torch.int64)
    got = fi.top_k_top_p_sampling_from_probs(tp, k, torch.full((8,), 0.8, dtype=torch.float64), seed=ts, offset=1)
    np.testing.assert_array_equal(got.numpy(), fi.top_k_top_p_sampling_from_probs(p, 20, 0.8, seed=seeds, offset=1))
    idx = torch.tensor([2, 2, 7], dtype=torch.int64)
    got = fi.sampling_from_logits(tx, indices=idx, seed=1, offset=1)
    assert got.dtype == torch.int64
    np.testing.assert_array_equal(got.numpy(), fi.sampling_from_logits(x[[2, 2, 7]], seed=1, offset=1))
    with pytest.raises(NotImplementedError, match="generator"):
        fi.sampling_from_logits(tx, generator=torch.Generator())
    np.testing.assert_array_equal(fi.top_k_mask_logits(tx, k).numpy(), fi.top_k_mask_logits(x, 20))
    np.testing.assert_array_equal(fi.top_k_mask_logits(tx, 20).numpy(), fi.top_k_mask_logits(x, 20))
    np.testing.assert_allclose(fi.softmax(tx, 0.7).numpy(), fi.softmax(x, 0.7), rtol=1e-5, atol=1e-7)
    bf = tx.to(torch.bfloat16)
    masked = fi.top_k_mask_logits(bf, 20)
    assert masked.dtype == torch.bfloat16
    np.testing.assert_array_equal(
        masked.float().numpy(), brute_top_k_mask(bf.float().numpy(), [20] * 8)
    )


def test_torch_cuda_equals_cpu():
    torch = _torch()
    dev = _cuda(torch)
    rng = np.random.default_rng(15)
    x, p = inputs(rng, batch=16, vocab=32000)
    x[3, :100] = float("nan")
    seeds = rng.integers(0, 2**62, 16).astype(np.int64)
    offsets = rng.integers(0, 1000, 16).astype(np.int64)
    gx, gp = torch.from_numpy(x).to(dev), torch.from_numpy(p).to(dev)
    gs, go = torch.from_numpy(seeds).to(dev), torch.from_numpy(offsets).to(dev)
    for name in SAMPLERS:
        _, extra, _ = SAMPLERS[name]
        gextra = tuple(
            torch.full((16,), a, device=dev, dtype=torch.int64 if isinstance(a, int) else torch.float32)
            for a in extra
        )
        got = call(name, gx, gp, *gextra, seed=gs, offset=go) if gextra else call(name, gx, gp, seed=gs, offset=go)
        assert got.is_cuda and got.dtype == torch.int32
        np.testing.assert_array_equal(got.cpu().numpy(), call(name, x, p, seed=seeds, offset=offsets))
        # row 5 alone == row 5 of the batch
        alone = call(name, gx[5:6], gp[5:6], seed=int(seeds[5]), offset=int(offsets[5]))
        assert int(alone[0]) == int(got[5])
    for k in (20, torch.tensor([0, 1, 5, -1, 40000, 7, 3, 2] * 2, device=dev)):
        kk = k if isinstance(k, int) else k.cpu().numpy()
        np.testing.assert_array_equal(fi.top_k_mask_logits(gx, k).cpu().numpy(), brute_top_k_mask(x, kk if not isinstance(kk, int) else [kk] * 16))
    sm = fi.softmax(gx[[0, 1, 2, 4]], torch.full((4,), 0.8, device=dev))
    assert sm.is_cuda and sm.dtype == torch.float32
    torch.testing.assert_close(sm.sum(dim=1), torch.ones(4, device=dev), rtol=0, atol=1e-5)
    idx = torch.tensor([1, 1, 0], device=dev, dtype=torch.int32)
    got = fi.top_k_top_p_sampling_from_logits(gx, 20, 0.8, indices=idx, seed=9, offset=2)
    assert got.dtype == torch.int32 and got.is_cuda
    np.testing.assert_array_equal(got.cpu().numpy(), fi.top_k_top_p_sampling_from_logits(x[[1, 1, 0]], 20, 0.8, seed=9, offset=2))
