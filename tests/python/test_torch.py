"""lmsample with torch tensors: CPU tensors (bf16 included) wherever torch is installed, and CUDA
tensors on a machine with a GPU: bit-identical to the CPU, the current stream, no host
synchronisation inside a call, CUDA-graph capture and replay."""

import numpy as np
import pytest

import lmsample
from conftest import random_logits, random_params

torch = pytest.importorskip("torch", reason="torch is not installed (the CPU suite uses NumPy)")

cuda = pytest.mark.skipif(
    not torch.cuda.is_available() or not lmsample.backend_available("cuda"),
    reason="no CUDA device, or this lmsample was built without the CUDA backend",
)


def torch_params(p, device):
    return {k: torch.from_numpy(v).to(device) for k, v in p.items()}


def test_torch_cpu_tensors_in_and_out_bf16_included():
    rng = np.random.default_rng(21)
    x = torch.from_numpy(random_logits(rng, 6, 4000))
    p = random_params(rng, 6)
    for dt in (torch.float32, torch.bfloat16, torch.float16):
        xt = x.to(dt)
        r = lmsample.sample(xt, logprobs=True, **torch_params(p, "cpu"))
        assert isinstance(r.tokens, torch.Tensor) and r.tokens.dtype == torch.int32
        # the NumPy path on the same bits (bf16 via its uint16 view is not a NumPy dtype, so
        # compare bf16 with the fp32 logits it was rounded from: rows are then valid samples)
        if dt != torch.bfloat16:
            want = lmsample.sample(xt.numpy(), logprobs=True, **p)
            np.testing.assert_array_equal(r.tokens.numpy(), want.tokens)
            np.testing.assert_array_equal(r.kept.numpy(), want.kept)
        assert (r.status == 0).all()


def _mixed_batch(rng, b, v, device):
    x = random_logits(rng, b, v)
    x[1] = -np.inf
    x[2, ::3] = np.nan
    p = random_params(rng, b)
    hist = torch.full((b, 5), -1, dtype=torch.int64)
    hist[:, 0] = torch.arange(b) % v
    hist[::2, 1] = 3
    return torch.from_numpy(x), p, hist


@cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_cuda_tensors_bit_identical_to_the_cpu(dtype):
    rng = np.random.default_rng(22)
    for b, v in [(7, 3001), (33, 151936), (130, 32000)]:
        x, p, hist = _mixed_batch(rng, b, v, "cuda")
        x = x.to(dtype)
        for extra in (
            {},
            {"repetition_penalty": 1.2, "presence_penalty": 0.3},
            {"top_logprobs": 3},
        ):
            kw = dict(extra)
            n_top = kw.pop("top_logprobs", 0)
            if kw:
                kw["output_tokens"] = hist
            cpu = lmsample.sample(x, logprobs=True, top_logprobs=n_top, **torch_params(p, "cpu"), **kw)
            kw_gpu = {k: (v.cuda() if isinstance(v, torch.Tensor) else v) for k, v in kw.items()}
            gpu = lmsample.sample(
                x.cuda(), logprobs=True, top_logprobs=n_top, **torch_params(p, "cuda"), **kw_gpu
            )
            assert gpu.tokens.device.type == "cuda"
            torch.testing.assert_close(gpu.tokens.cpu(), cpu.tokens, rtol=0, atol=0)
            torch.testing.assert_close(gpu.status.cpu(), cpu.status, rtol=0, atol=0)
            torch.testing.assert_close(gpu.kept.cpu(), cpu.kept, rtol=0, atol=0)
            torch.testing.assert_close(gpu.logprob.cpu(), cpu.logprob, rtol=0, atol=1e-6)
            if n_top:
                torch.testing.assert_close(gpu.top_ids.cpu(), cpu.top_ids, rtol=0, atol=0)


@cuda
def test_cuda_scalars_strided_and_sampler_match_the_cpu():
    rng = np.random.default_rng(23)
    big = torch.from_numpy(random_logits(rng, 16, 50000))
    view = big[1::2, :40000]  # a strided slice: no copy
    kw = dict(temperature=0.7, top_p=0.9, top_k=50, seed=5, step=9)
    cpu = lmsample.sample(view.contiguous(), **kw)
    gpu = lmsample.sample(big.cuda()[1::2, :40000], **kw)
    assert torch.equal(gpu.tokens.cpu(), cpu.tokens)
    s = lmsample.Sampler(8, 40000, "cuda")
    got = s.sample(big.cuda()[1::2, :40000], **kw)
    assert torch.equal(got.tokens.cpu(), cpu.tokens)


@cuda
def test_cuda_errors():
    x = torch.zeros(4, 100, device="cuda")
    with pytest.raises(ValueError, match="on cpu but the logits are on cuda"):
        lmsample.sample(x, top_p=torch.ones(4))
    with pytest.raises(ValueError, match="backend"):
        lmsample.sample(x, backend="cpu")
    bad = torch.tensor([0.9, float("nan"), 0.9, 0.9], device="cuda")
    with pytest.raises(lmsample.BadRowError, match="row 1: top_p"):
        lmsample.sample(x, top_p=bad, raise_on_bad_rows=True)
    r = lmsample.sample(x, top_p=bad)
    assert r.status.tolist() == [0, 4, 0, 0]


@cuda
def test_cuda_runs_on_the_current_stream():
    v = 151936
    side = torch.cuda.Stream()
    x = torch.zeros(4, v, device="cuda")
    hot = torch.zeros(4, v, device="cuda")
    hot[:, 1234] = 100.0
    torch.cuda.synchronize()
    with torch.cuda.stream(side):
        torch.cuda._sleep(50_000_000)  # ~25 ms of GPU time on `side` before the copy
        x.copy_(hot)
        r = lmsample.sample(x, temperature=0)
    side.synchronize()
    # had the call run on another stream it would have read the zeros (token 0)
    assert r.tokens.tolist() == [1234] * 4
    s = lmsample.Sampler(4, v, "cuda")
    x.zero_()
    torch.cuda.synchronize()
    with torch.cuda.stream(side):
        torch.cuda._sleep(50_000_000)
        x.copy_(hot)
        r = s.sample(x, temperature=0)
    side.synchronize()
    assert r.tokens.tolist() == [1234] * 4
    # stream= overrides the current stream
    x.zero_()
    torch.cuda.synchronize()
    with torch.cuda.stream(side):
        torch.cuda._sleep(50_000_000)
        x.copy_(hot)
    r = lmsample.sample(x, temperature=0, stream=side)
    side.synchronize()
    assert r.tokens.tolist() == [1234] * 4


@cuda
def test_cuda_calls_never_synchronise():
    rng = np.random.default_rng(24)
    x, p, hist = _mixed_batch(rng, 16, 32000, "cuda")
    x = x.cuda()
    tp = torch_params(p, "cuda")
    hist = hist.cuda()
    s = lmsample.Sampler(16, 32000, "cuda", max_top_logprobs=2)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        lmsample.sample(x, temperature=0.7, top_p=0.9, seed=1, step=2)
        lmsample.sample(x, logprobs=True, top_logprobs=2, **tp)
        lmsample.sample(x, output_tokens=hist, prompt_tokens=hist, repetition_penalty=1.1, **tp)
        s.sample(x, **tp)
        s.sample(x, temperature=0.7, top_p=0.9, seed=1, step=2, logprobs=True, top_logprobs=2)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()


@cuda
def test_cuda_graph_capture_and_replay_equal_eager():
    b, v = 8, 151936
    rng = np.random.default_rng(25)
    s = lmsample.Sampler(b, v, "cuda")
    logits = torch.empty(b, v, device="cuda")
    seeds = torch.arange(100, 100 + b, device="cuda", dtype=torch.int64)
    steps = torch.zeros(b, device="cuda", dtype=torch.int64)
    top_p = torch.full((b,), 0.9, device="cuda")
    logits.copy_(torch.from_numpy(random_logits(rng, b, v)))
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up outside the graph, as torch asks
        s.sample(logits, temperature=0.8, top_p=top_p, seed=seeds, step=steps)
    torch.cuda.current_stream().wait_stream(side)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        captured = s.sample(logits, temperature=0.8, top_p=top_p, seed=seeds, step=steps)
    for step in range(5):
        new = torch.from_numpy(random_logits(rng, b, v)).cuda()
        logits.copy_(new)
        steps.fill_(step)
        g.replay()
        got = captured.tokens.clone()
        eager = lmsample.sample(new, temperature=0.8, top_p=top_p, seed=seeds, step=steps)
        assert torch.equal(got, eager.tokens), f"step {step}"
        cpu = lmsample.sample(new.cpu(), temperature=0.8, top_p=0.9, seed=seeds.cpu(),
                              step=step)  # fmt: skip
        assert torch.equal(got.cpu(), cpu.tokens)


def test_sampler_torch_path_checks_what_dlpack_would():
    """The Sampler's torch path reads tensors through their accessors: it must accept and reject
    exactly what the DLPack path does."""
    rng = np.random.default_rng(26)
    b, v = 5, 3000
    x = torch.from_numpy(random_logits(rng, b, v))
    p = torch_params(random_params(rng, b), "cpu")
    s = lmsample.Sampler(8, v, "cpu")
    for dt in (torch.float32, torch.bfloat16, torch.float16):
        got = s.sample(x.to(dt), logprobs=True, **p)
        want = lmsample.sample(x.to(dt), logprobs=True, **p)
        assert torch.equal(got.tokens, want.tokens) and torch.equal(got.kept, want.kept)
    wide = torch.from_numpy(random_logits(rng, b, v + 77))
    assert torch.equal(
        s.sample(wide[:, :v], temperature=0.5, seed=3).tokens,
        lmsample.sample(wide[:, :v].contiguous(), temperature=0.5, seed=3).tokens,
    )
    with pytest.raises(ValueError, match="int64; expected int32"):
        s.sample(x, top_k=torch.ones(b, dtype=torch.int64))
    with pytest.raises(ValueError, match="shape"):
        s.sample(x, top_p=torch.ones(b + 1))
    with pytest.raises(ValueError, match="contiguous"):
        s.sample(x, top_p=torch.ones(2 * b)[::2])
    with pytest.raises(ValueError, match="float64"):
        s.sample(x.double())
    with pytest.raises(ValueError, match="unit stride"):
        s.sample(wide[:, ::2][:, :v] if wide[:, ::2].shape[1] >= v else torch.zeros(b, 2 * v)[:, ::2])
    with pytest.raises(ValueError, match="Sampler takes"):
        s.sample(torch.zeros(9, v))
    # lists fall back to the general path
    assert torch.equal(
        s.sample(x, temperature=[0.7] * b, seed=1).tokens,
        lmsample.sample(x, temperature=0.7, seed=1).tokens,
    )


def test_sample_returns_fresh_tensors_each_call():
    """lmsample.sample()'s torch path borrows a per-thread Sampler's checks but never its output
    buffers: an earlier result is not overwritten by a later call."""
    x = torch.zeros(3, 50)
    x[:, 7] = 9.0
    y = torch.zeros(3, 50)
    y[:, 11] = 9.0
    r1 = lmsample.sample(x, temperature=0, logprobs=True, top_logprobs=2)
    r2 = lmsample.sample(y, temperature=0, logprobs=True, top_logprobs=2)
    assert r1.tokens.tolist() == [7, 7, 7] and r2.tokens.tolist() == [11, 11, 11]
    assert r1.top_ids[:, 0].tolist() == [7, 7, 7]
    assert r1.tokens.data_ptr() != r2.tokens.data_ptr()
    with pytest.raises(ValueError, match="top_k"):
        lmsample.sample(x, top_k=-1)
    with pytest.raises(ValueError, match="backend"):
        lmsample.sample(x, backend="nope")


@cuda
def test_sampler_rejects_logits_on_another_device():
    s = lmsample.Sampler(4, 100, "cuda")
    with pytest.raises(ValueError, match="Sampler's buffers"):
        s.sample(torch.zeros(2, 100), temperature=0)
    c = lmsample.Sampler(4, 100, "cpu")
    with pytest.raises(ValueError, match="Sampler's buffers"):
        c.sample(torch.zeros(2, 100, device="cuda"), temperature=0)


@cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_greedy_by_scalar_is_bit_identical_to_the_cpu(dtype):
    """temperature=0 as a scalar tells the host that every row is greedy (the GPU then streams
    the row's keys): the same bits as the CPU, special rows, logprobs and top logprobs included,
    at the batch sizes on both sides of the policy's B = 128 edge."""
    rng = np.random.default_rng(27)
    for b, v in [(1, 151936), (33, 32000), (130, 151936), (600, 4096)]:
        x = torch.from_numpy(random_logits(rng, b, v)).to(dtype)
        x[0, :] = float("nan")
        if b > 2:
            x[1, :] = float("-inf")
            x[2, 5] = float("inf")
        for kw in ({}, {"logprobs": True}, {"logprobs": True, "top_logprobs": 4}):
            cpu = lmsample.sample(x, temperature=0, **kw)
            gpu = lmsample.sample(x.cuda(), temperature=0, **kw)
            assert torch.equal(gpu.tokens.cpu(), cpu.tokens), (b, v, kw)
            assert torch.equal(gpu.status.cpu(), cpu.status), (b, v, kw)
            if kw:
                assert torch.equal(gpu.kept.cpu(), cpu.kept)
                torch.testing.assert_close(gpu.logprob.cpu(), cpu.logprob, rtol=0, atol=1e-6)
            if "top_logprobs" in kw:
                assert torch.equal(gpu.top_ids.cpu(), cpu.top_ids)
