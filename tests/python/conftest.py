"""Shared helpers of the Python tests (the Python side of the project's test kit: random rows of
the same shapes as tests/test_util.hpp's generators, and the C++ tool as the CPU reference)."""

import json
import os
import shutil
import subprocess

import numpy as np
import pytest


def random_logits(rng, batch, vocab, dtype=np.float32):
    """Rows of several shapes: Gaussian bodies, quantized (many exact ties), spiky, near flat."""
    x = np.empty((batch, vocab), dtype=np.float32)
    for r in range(batch):
        kind = r % 4
        if kind == 0:
            x[r] = rng.normal(rng.uniform(-4, 4), rng.uniform(0.5, 4), vocab)
        elif kind == 1:
            x[r] = np.round(rng.normal(0, 2, vocab) * 4) / 4
        elif kind == 2:
            x[r] = rng.normal(0, 1.5, vocab)
            x[r, rng.integers(0, vocab, 5)] += rng.uniform(5, 15, 5)
        else:
            x[r] = 3.0 + rng.normal(0, 1e-5, vocab)
    return x.astype(dtype)


def random_params(rng, batch):
    return {
        "temperature": np.where(rng.random(batch) < 0.2, 0.0, rng.uniform(0.1, 2.0, batch)).astype(
            np.float32
        ),
        "top_k": np.where(rng.random(batch) < 0.5, 0, rng.integers(1, 100, batch)).astype(np.int32),
        "top_p": np.where(rng.random(batch) < 0.4, 1.0, rng.uniform(0.3, 1.0, batch)).astype(
            np.float32
        ),
        "min_p": np.where(rng.random(batch) < 0.7, 0.0, rng.uniform(0.0, 0.3, batch)).astype(
            np.float32
        ),
        "seed": rng.integers(0, 2**62, batch).astype(np.int64),
        "step": rng.integers(0, 1000, batch).astype(np.int64),
    }


def cli_path():
    """The C++ build's `lmsample` tool: $LMSAMPLE_CLI, the package's copy, or ./build."""
    env = os.environ.get("LMSAMPLE_CLI")
    if env:
        return env
    import lmsample

    here = os.path.join(os.path.dirname(lmsample.__file__), "bin", "lmsample")
    if os.access(here, os.X_OK):
        return here
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    built = os.path.join(root, "build", "lmsample")
    return built if os.access(built, os.X_OK) else shutil.which("lmsample")


@pytest.fixture
def cli():
    path = cli_path()
    if not path:
        pytest.skip("the lmsample tool is not built (set LMSAMPLE_CLI)")
    return path


def run_cli(cli, tmp_path, logits, params, logprobs=True, extra=()):
    """Samples with the C++ tool on the CPU; returns tokens, status names, kept, logprob."""
    np.save(tmp_path / "logits.npy", logits)
    args = [cli, "sample", "--backend", "cpu", "--logits", str(tmp_path / "logits.npy")]
    if logits.dtype == np.uint16:
        args.append("--bf16")
    for name, value in params.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, np.ndarray):
            np.save(tmp_path / f"{name}.npy", value.astype(np.uint64) if name in ("seed", "step") else value)
            args += [flag + "-npy", str(tmp_path / f"{name}.npy")]
        else:
            args += [flag, str(value)]
    if logprobs:
        args.append("--logprobs")
    args += list(extra)
    p = subprocess.run(args, capture_output=True, text=True)
    assert p.returncode in (0, 2), p.stderr
    rows = [json.loads(line) for line in p.stdout.splitlines()]
    tokens = np.array([r["token"] for r in rows], dtype=np.int32)
    status = [r["status"] for r in rows]
    kept = np.array([r.get("kept", 0) for r in rows], dtype=np.int32)
    logprob = np.array(
        [np.float32(-np.inf) if r.get("logprob") is None else r["logprob"] for r in rows],
        dtype=np.float32,
    )
    return tokens, status, kept, logprob
