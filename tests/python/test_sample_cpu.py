"""lmsample.sample / lmsample.Sampler on the CPU with NumPy arrays: the same bits as the C++
backend, scalars and arrays, strided and fp16 inputs, histories, bias, masks and every error path."""

import subprocess
import sys

import numpy as np
import pytest

import lmsample
from conftest import random_logits, random_params, run_cli


def sample_np(x, **kw):
    return lmsample.sample(x, backend="cpu", **kw)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_same_bits_as_the_cpp_backend(cli, tmp_path, dtype):
    rng = np.random.default_rng(11 if dtype == np.float32 else 12)
    for batch, vocab in [(9, 3001), (4, 151936)]:
        x = random_logits(rng, batch, vocab, dtype)
        params = random_params(rng, batch)
        r = sample_np(x, logprobs=True, **params)
        tokens, status, kept, logprob = run_cli(cli, tmp_path, x, params)
        np.testing.assert_array_equal(r.tokens, tokens)
        assert [lmsample.ROW_STATUS_NAMES[s] for s in r.status] == status
        np.testing.assert_array_equal(r.kept, kept)
        np.testing.assert_array_equal(r.logprob.view(np.uint32), logprob.view(np.uint32))
        assert r.tokens.dtype == np.int32 and isinstance(r.tokens, np.ndarray)


def test_scalars_equal_arrays_equal_lists():
    rng = np.random.default_rng(3)
    x = random_logits(rng, 6, 2000)
    b = x.shape[0]
    scalar = sample_np(x, temperature=0.8, top_k=40, top_p=0.9, min_p=0.02, seed=77, step=5)
    arrays = sample_np(
        x,
        temperature=np.full(b, 0.8, np.float32),
        top_k=np.full(b, 40, np.int32),
        top_p=np.full(b, 0.9, np.float32),
        min_p=np.full(b, 0.02, np.float32),
        seed=np.full(b, 77, np.uint64),
        step=np.full(b, 5, np.int64),
    )
    lists = sample_np(
        x, temperature=[0.8] * b, top_k=[40] * b, top_p=[0.9] * b, min_p=[0.02] * b,
        seed=[77] * b, step=[5] * b,
    )  # fmt: skip
    np.testing.assert_array_equal(scalar.tokens, arrays.tokens)
    np.testing.assert_array_equal(scalar.tokens, lists.tokens)
    # and the parameters matter: another seed or a greedy temperature changes tokens
    other = sample_np(x, temperature=0.8, top_k=40, top_p=0.9, min_p=0.02, seed=78, step=5)
    assert (other.tokens != scalar.tokens).any()
    greedy = sample_np(x, temperature=0)
    np.testing.assert_array_equal(greedy.tokens, x.argmax(axis=1))


def test_row_result_does_not_depend_on_its_batch():
    rng = np.random.default_rng(5)
    x = random_logits(rng, 8, 1500)
    p = random_params(rng, 8)
    full = sample_np(x, **p)
    for r in (0, 5, 7):
        alone = sample_np(x[r : r + 1], **{k: v[r : r + 1] for k, v in p.items()})
        assert alone.tokens[0] == full.tokens[r]


def test_strided_logits_without_a_copy_give_the_same_bits():
    rng = np.random.default_rng(8)
    big = random_logits(rng, 10, 1200)
    view = big[::2, :1000]  # row stride 2400 elements, vocab 1000
    assert not view.flags.c_contiguous
    want = sample_np(np.ascontiguousarray(view), temperature=0.7, top_p=0.95, seed=1)
    got = sample_np(view, temperature=0.7, top_p=0.95, seed=1)
    np.testing.assert_array_equal(got.tokens, want.tokens)
    with pytest.raises(ValueError, match="unit stride"):
        sample_np(big[:, ::2])


def test_top_logprobs_and_logprobs():
    rng = np.random.default_rng(9)
    x = random_logits(rng, 3, 500)
    r = sample_np(x, logprobs=True, top_logprobs=5, temperature=0.0)
    assert r.top_ids.shape == (3, 5) and r.top_logprobs.shape == (3, 5)
    for i in range(3):
        order = np.argsort(-x[i], kind="stable")[:5]
        np.testing.assert_array_equal(r.top_ids[i], order)
        lse = np.log(np.exp(x[i].astype(np.float64) - x[i].max()).sum()) + x[i].max()
        np.testing.assert_allclose(r.top_logprobs[i], x[i, order] - lse, rtol=0, atol=1e-5)
        assert r.tokens[i] == order[0]
        assert r.logprob[i] == r.top_logprobs[i, 0]
    plain = sample_np(x)
    assert plain.logprob is None and plain.top_ids is None


def test_histories_padded_csr_and_lists_agree():
    rng = np.random.default_rng(10)
    b, v = 4, 800
    x = random_logits(rng, b, v)
    hist = [[1, 2, 2, 3], [], [7], [5, 5, 5, 9, 10]]
    padded = np.full((b, 6), -1, dtype=np.int64)
    for r, h in enumerate(hist):
        padded[r, : len(h)] = h
    padded[0, 5] = -3  # padding anywhere
    offsets = np.cumsum([0] + [len(h) for h in hist]).astype(np.int64)
    tokens = np.array(sum(hist, []), dtype=np.int32)
    kw = dict(temperature=0.9, seed=4, repetition_penalty=1.3, frequency_penalty=0.4,
              presence_penalty=0.2)  # fmt: skip
    a = sample_np(x, output_tokens=padded, prompt_tokens=padded, **kw)
    c = sample_np(x, output_tokens=(offsets, tokens), prompt_tokens=(offsets, tokens), **kw)
    lst = sample_np(x, output_tokens=hist, prompt_tokens=hist, **kw)
    np.testing.assert_array_equal(a.tokens, c.tokens)
    np.testing.assert_array_equal(a.tokens, lst.tokens)
    # penalties act: a token made dominant, then penalised hard, is no longer chosen greedily
    y = np.zeros((1, 50), np.float32)
    y[0, 7] = 5.0
    y[0, 8] = 4.0
    g = sample_np(y, temperature=0, output_tokens=[[7]], presence_penalty=2.0)
    assert g.tokens[0] == 8
    bad = sample_np(y, temperature=0, output_tokens=[[50]], presence_penalty=1.0)
    assert bad.status[0] == 9 and bad.tokens[0] == -1


def test_logit_bias_dicts_equal_csr_and_the_mask_blocks_tokens():
    b, v = 3, 100
    x = np.zeros((b, v), np.float32)
    bias = [{5: 10.0}, {}, {99: 3.0, 1: 2.0}]
    off = np.array([0, 1, 1, 3], np.int64)
    tok = np.array([5, 99, 1], np.int32)
    val = np.array([10.0, 3.0, 2.0], np.float32)
    d = sample_np(x, temperature=0, logit_bias=bias)
    c = sample_np(x, temperature=0, logit_bias=(off, tok, val))
    np.testing.assert_array_equal(d.tokens, [5, 0, 99])
    np.testing.assert_array_equal(c.tokens, d.tokens)
    # xgrammar's int32 bitmask: allow only tokens 40..47 in row 0, everything in the others
    mask = np.full((b, (v + 31) // 32), -1, dtype=np.int32)
    mask[0] = 0
    mask[0, 1] = np.int32(0xFF << 8)
    for seed in range(20):
        t = sample_np(x, allowed_mask=mask, seed=seed).tokens
        assert 40 <= t[0] < 48
    empty = np.zeros_like(mask)
    r = sample_np(x, allowed_mask=empty)
    assert (r.status == lmsample.ROW_EMPTY).all() and (r.tokens == -1).all()


def test_out_is_written_in_place_and_left_untouched_on_errors():
    rng = np.random.default_rng(12)
    x = random_logits(rng, 4, 300)
    out = {"tokens": np.full(4, -7, np.int32), "status": np.full(4, -7, np.int32)}
    r = sample_np(x, temperature=0, out=out)
    assert r.tokens is out["tokens"]
    np.testing.assert_array_equal(out["tokens"], x.argmax(1))
    out = {"tokens": np.full(4, -7, np.int32), "status": np.full(4, -7, np.int32)}
    with pytest.raises(ValueError, match="top_p"):
        sample_np(x, top_p=-1.0, out=out)
    assert (out["tokens"] == -7).all() and (out["status"] == -7).all()
    bad_rows = np.array([0.9, 0.9, np.nan, 0.9], np.float32)
    with pytest.raises(lmsample.BadRowError, match="row 2: top_p") as e:
        sample_np(x, top_p=bad_rows, out=out, raise_on_bad_rows=True)
    assert e.value.row == 2
    assert (out["tokens"] == -7).all()
    # without raise_on_bad_rows the bad row has its status and the others are sampled
    r = sample_np(x, top_p=bad_rows)
    assert list(r.status) == [0, 0, 4, 0] and r.tokens[2] == -1


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(temperature=-1.0), "temperature"),
        (dict(temperature=float("nan")), "temperature"),
        (dict(top_k=-2), "top_k"),
        (dict(top_k=1.5), "top_k"),
        (dict(min_p=2.0), "min_p"),
        (dict(repetition_penalty=0.0), "repetition_penalty"),
        (dict(frequency_penalty=9.0), "frequency_penalty"),
        (dict(presence_penalty=-9.0), "presence_penalty"),
        (dict(seed=-1), "seed"),
        (dict(seed=1.5), "seed"),
        (dict(top_p=np.ones(3, np.float32)), r"shape \(4,\)"),
        (dict(top_p=np.ones(4, np.float64)), "float64; expected float32"),
        (dict(top_k=np.ones(4, np.int64)), "int64; expected int32"),
        (dict(top_p=np.ones((4, 1), np.float32)), "1-D|shape"),
        (dict(top_p=np.ones(8, np.float32)[::2]), "contiguous"),
        (dict(top_p="0.9"), "top_p"),
        (dict(top_logprobs=65), "top_logprobs"),
        (dict(top_logprobs=1.5), "top_logprobs"),
        (dict(backend="cuda"), "backend|cuda"),
        (dict(backend="tpu"), "backend"),
        (dict(gpu_keys="fast"), "gpu_keys"),
        (dict(allowed_mask=np.zeros((4, 2), np.int32)), "allowed_mask"),
        (dict(allowed_mask=np.zeros((4, 10), np.float32)), "allowed_mask"),
        (dict(output_tokens=np.zeros((3, 2), np.int64)), "output_tokens"),
        (dict(output_tokens=[[1]] * 3), "output_tokens"),
        (dict(logit_bias=[{1: 1.0}]), "logit_bias"),
        (dict(logit_bias=(np.array([0, 1, 1, 1, 5], np.int64), np.array([1], np.int32),
                          np.array([1.0], np.float32))), "offsets run outside"),  # fmt: skip
        (dict(stream="s0"), "stream"),
        (dict(out=5), "out"),
    ],
)
def test_bad_arguments_raise_value_errors_naming_them(kwargs, match):
    x = np.zeros((4, 300), np.float32)
    with pytest.raises(ValueError, match=match):
        lmsample.sample(x, **kwargs)


def test_bad_logits_raise():
    with pytest.raises(ValueError, match="2-D"):
        lmsample.sample(np.zeros(10, np.float32))
    with pytest.raises(ValueError, match="float64"):
        lmsample.sample(np.zeros((2, 10), np.float64))
    with pytest.raises(ValueError, match="int32"):
        lmsample.sample(np.zeros((2, 10), np.int32))
    with pytest.raises(ValueError, match="vocab"):
        lmsample.sample(np.zeros((2, 0), np.float32))
    with pytest.raises(ValueError, match="not supported"):
        lmsample.sample([[0.0, 1.0]])
    empty = lmsample.sample(np.zeros((0, 10), np.float32))
    assert empty.tokens.shape == (0,)


def test_nan_and_inf_rows_never_hang_or_give_garbage():
    x = np.zeros((3, 64), np.float32)
    x[0] = np.nan
    x[1] = -np.inf
    x[2, :] = np.nan
    x[2, 17] = 1.0
    r = lmsample.sample(x, top_p=0.9, top_k=5, seed=1)
    assert list(r.status) == [1, 1, 0]
    assert list(r.tokens) == [-1, -1, 17]


def test_sampler_reuses_its_buffers_and_matches_sample():
    rng = np.random.default_rng(13)
    s = lmsample.Sampler(16, 700, "cpu", framework="numpy", max_top_logprobs=4)
    assert s.framework == "numpy"
    for b in (16, 3, 16):
        x = random_logits(rng, b, 700)
        p = random_params(rng, b)
        got = s.sample(x, logprobs=True, top_logprobs=4, **p)
        want = lmsample.sample(x, logprobs=True, top_logprobs=4, **p)
        np.testing.assert_array_equal(got.tokens, want.tokens)
        np.testing.assert_array_equal(got.kept, want.kept)
        np.testing.assert_array_equal(got.top_ids, want.top_ids)
    first = s.sample(x, temperature=0).tokens
    again = s.sample(x, temperature=0).tokens
    assert first is again  # the same view: the sampler's own buffer
    with pytest.raises(ValueError, match="Sampler takes"):
        s.sample(np.zeros((17, 700), np.float32))
    with pytest.raises(ValueError, match="Sampler takes"):
        s.sample(np.zeros((2, 701), np.float32))
    with pytest.raises(ValueError, match="max_top_logprobs"):
        s.sample(x, top_logprobs=5)
    with pytest.raises(ValueError, match="max_batch"):
        lmsample.Sampler(0, 10, "cpu", framework="numpy")


def test_module_facts():
    assert lmsample.version() == lmsample.__version__ == "0.1.0"
    assert lmsample.contract_version() == 2
    assert lmsample.backend_available("cpu")
    assert lmsample.ROW_STATUS_NAMES[4] == "bad_top_p"
    with pytest.raises(ValueError, match="backend"):
        lmsample.backend_available("gpu")


def test_jax_arrays_are_refused_with_a_reason():
    jnp = pytest.importorskip("jax.numpy", reason="JAX is not installed")
    with pytest.raises(ValueError, match="immutable"):
        lmsample.sample(jnp.zeros((2, 10), jnp.float32))


def test_python_m_lmsample_runs_the_tool():
    import os

    tool = os.path.join(os.path.dirname(lmsample.__file__), "bin", "lmsample")
    p = subprocess.run([sys.executable, "-m", "lmsample", "--help"], capture_output=True, text=True)
    if not os.access(tool, os.X_OK):
        assert p.returncode == 2 and "not part of this installation" in p.stderr
        pytest.skip("the tool is not in this installation (built without CLI11)")
    assert p.returncode == 0 and "demo" in p.stdout
    p = subprocess.run(
        [sys.executable, "-m", "lmsample", "verify", "--quick", "--backend", "cpu"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert p.returncode == 0, p.stdout + p.stderr


def test_sampler_rejects_logits_of_another_device_or_framework_device():
    s = lmsample.Sampler(4, 100, "cpu", framework="numpy")
    x = np.zeros((2, 100), np.float32)
    assert s.sample(x, temperature=0).tokens.tolist() == [0, 0]
    cupy = pytest.importorskip("cupy", reason="CuPy is not installed")
    if cupy.cuda.runtime.getDeviceCount() == 0:
        pytest.skip("no CUDA device")
    with pytest.raises(ValueError, match="Sampler's buffers"):
        s.sample(cupy.zeros((2, 100), cupy.float32))
