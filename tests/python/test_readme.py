"""The README's Python quick start, run as written (it needs a CUDA GPU and torch)."""

import os
import re

import pytest

import lmsample

README = os.path.join(os.path.dirname(__file__), "..", "..", "README.md")


def quick_start():
    text = open(README, encoding="utf-8").read()
    head = text.index("Quick start (this block is run by `tests/python/test_readme.py`")
    m = re.compile(r"```python\n(.*?)```", re.S).search(text, head)
    assert m, "the README lost its Python quick start"
    return m.group(1)


def test_readme_quick_start_is_there_and_compiles():
    compile(quick_start(), "README.md", "exec")


def test_readme_quick_start_runs():
    torch = pytest.importorskip("torch", reason="torch is not installed")
    if not torch.cuda.is_available() or not lmsample.backend_available("cuda"):
        pytest.skip("the quick start needs a CUDA GPU and the CUDA backend")
    exec(compile(quick_start(), "README.md", "exec"), {})
