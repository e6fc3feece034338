"""lmsample: exact, reproducible LLM token sampling on the CPU and on GPUs.

    import lmsample
    result = lmsample.sample(logits, temperature=0.7, top_p=0.9, seed=seeds, step=step)
    next_tokens = result.tokens

Each row's token is a pure function of (its logits, its parameters, its seed, its step): the same
on every backend and at any batch position (docs/contract.md). Arrays come in through DLPack
(torch, NumPy, CuPy) and results go out as arrays of the same framework on the same device.
`lmsample.Sampler` owns a reusable workspace and output buffers (CUDA-graph capturable);
`lmsample.flashinfer` offers flashinfer.sampling's names and signatures.
"""

from . import flashinfer
from ._api import (
    ROW_EMPTY,
    ROW_OK,
    ROW_STATUS_NAMES,
    BadRowError,
    ChainResult,
    SampleResult,
    Sampler,
    TreeResult,
    backend_available,
    contract_version,
    sample,
    verify_chain,
    verify_tree,
    version,
)

__version__ = version()

__all__ = [
    "ROW_EMPTY",
    "ROW_OK",
    "ROW_STATUS_NAMES",
    "BadRowError",
    "ChainResult",
    "SampleResult",
    "Sampler",
    "TreeResult",
    "backend_available",
    "contract_version",
    "flashinfer",
    "sample",
    "verify_chain",
    "verify_tree",
    "version",
]

