"""lmsample.verify_chain (speculative chain verification, CPU) from Python: the same results as
the tool and library (K = 0 is sample()'s token), greedy verification, and clear errors."""

import numpy as np
import pytest

import lmsample


def _rows(n, v, seed):
    return np.random.default_rng(seed).normal(0.0, 2.0, (n, v)).astype(np.float32)


def test_k_zero_is_sample():
    target = _rows(6, 50, 1)
    drafts = np.zeros((6, 0), dtype=np.int32)
    res = lmsample.verify_chain(target, drafts, temperature=0.8, top_p=0.9, seed=[1, 2, 3, 4, 5, 6],
                                logprobs=True)
    want = lmsample.sample(target, temperature=0.8, top_p=0.9, seed=np.arange(1, 7, dtype=np.uint64),
                           logprobs=True)
    assert res.tokens.shape == (6, 1)
    assert res.tokens[:, 0].tolist() == want.tokens.tolist()
    assert res.logprobs[:, 0].tolist() == want.logprob.tolist()
    assert res.accepted.tolist() == [0] * 6
    assert res.status.tolist() == [lmsample.ROW_OK] * 6


def test_greedy_accepts_while_the_draft_is_the_argmax():
    target = _rows(4 * 3, 30, 2)
    best = target.argmax(axis=1).reshape(4, 3)
    drafts = best[:, :2].copy()
    drafts[1, 1] = (drafts[1, 1] + 1) % 30  # request 1: second draft wrong
    drafts[2, 0] = (drafts[2, 0] + 1) % 30  # request 2: first draft wrong
    res = lmsample.verify_chain(target, drafts.astype(np.int64), temperature=0.0)
    assert res.accepted.tolist() == [2, 1, 0, 2]
    assert res.tokens[0].tolist() == best[0].tolist()
    assert res.tokens[1].tolist() == [best[1, 0], best[1, 1], -1]
    assert res.tokens[2].tolist() == [best[2, 0], -1, -1]


def test_packed_requests_and_draft_probs():
    v = 20
    target = _rows(7, v, 3)
    offsets = np.array([0, 3, 7], dtype=np.int64)  # K = 2 and 3
    drafts = np.array([1, 2, 3, 4, 5], dtype=np.int32)
    q = np.full((5, v), 1.0 / v, dtype=np.float32)
    a = lmsample.verify_chain(target, drafts, row_offsets=offsets, draft_probs=q, seed=9)
    b = lmsample.verify_chain(target, drafts, row_offsets=offsets, draft_probs=q, seed=9)
    assert a.tokens.tolist() == b.tokens.tolist()  # a pure function of its inputs
    assert a.tokens.shape == (7,)
    for r, (lo, hi) in enumerate([(0, 3), (3, 7)]):
        emitted = [t for t in a.tokens[lo:hi].tolist() if t >= 0]
        assert len(emitted) == a.accepted[r] + 1


def test_errors_name_the_request():
    target = _rows(6, 10, 4)
    with pytest.raises(ValueError, match=r"request 1: draft 0 = 10 is outside \[0, vocab = 10\)"):
        lmsample.verify_chain(target, np.array([[1, 2], [10, 3]]))
    with pytest.raises(ValueError, match=r"need B \(K \+ 1\) = 4"):
        lmsample.verify_chain(target, np.array([[1], [2]]))
    q = np.full((4, 10), 0.1, dtype=np.float32)
    q[2, 7] = 1.5
    with pytest.raises(ValueError, match=r"request 1: draft 0 probability of token 7 = 1.5"):
        lmsample.verify_chain(target, np.array([[1, 2], [3, 4]]), draft_probs=q)


def test_tree_chain_shaped_equals_the_chain():
    v = 25
    target = _rows(2 * 4, v, 5)
    drafts = target.reshape(2, 4, v)[:, :3, :].argmax(axis=2)
    chain = lmsample.verify_chain(target, drafts, temperature=0.9, seed=[3, 4], logprobs=True)
    parents = np.array([-1, 0, 1, 2] * 2, dtype=np.int32)
    tokens = np.concatenate([[0, *drafts[0]], [0, *drafts[1]]]).astype(np.int32)
    tree = lmsample.verify_tree(target, parents, tokens, np.array([0, 4, 8], dtype=np.int64),
                                temperature=0.9, seed=[3, 4], logprobs=True)
    assert tree.accepted.tolist() == chain.accepted.tolist()
    assert tree.tokens.tolist() == chain.tokens.reshape(-1).tolist()
    assert tree.logprobs.tolist() == chain.logprobs.reshape(-1).tolist()
    for r in range(2):
        a = int(tree.accepted[r])
        assert tree.path[4 * r: 4 * r + a].tolist() == list(range(1, a + 1))


def test_tree_errors_name_the_node():
    target = _rows(3, 10, 6)
    with pytest.raises(ValueError, match=r"request 0: node 2 has parent 2"):
        lmsample.verify_tree(target, np.array([-1, 0, 2]), np.array([0, 1, 2]),
                             np.array([0, 3], dtype=np.int64))
