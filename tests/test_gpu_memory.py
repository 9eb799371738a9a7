"""GPU tests (run on the device: pytest -m gpu): L4 emulation, and the one-copy engine's task cycle (train, sample,
next task) starting every task from the base model."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from arc_submit.llm import Sampling, TrainSettings, prompts
from arc_submit.llm.engine import TrainingText
from arc_submit.llm.recipes import recipe

OURS = recipe("arc-submit")  # our own layout, through the tiny model's chat template
from arc_submit.tasks import Example

pytestmark = pytest.mark.gpu

FREE_IN_A_FRESH_PROCESS = ("import torch; torch.cuda.init(); free, total = torch.cuda.mem_get_info(); "
                           "print(free / 2**30)")


def test_ballast_leaves_each_card_an_l4():
    from arc_submit.gpu_ballast import Ballast

    with Ballast(["0"], keep_gib=22.3) as ballast:
        free = float(subprocess.run([sys.executable, "-c", FREE_IN_A_FRESH_PROCESS], capture_output=True, text=True,
                                    check=True).stdout)
        assert 20.0 < free <= 22.3, (free, ballast.report)
    after = float(subprocess.run([sys.executable, "-c", FREE_IN_A_FRESH_PROCESS], capture_output=True, text=True,
                                 check=True).stdout)
    assert after > 40  # the ballast let go


def flip_task(seed: int):
    rng = np.random.default_rng(seed)
    grids = [rng.integers(0, 10, (4, 5)).astype(np.int8) for _ in range(4)]
    return [Example(g, g[:, ::-1].copy()) for g in grids[:3]], grids[3]


def test_one_copy_engine_starts_every_task_from_the_base_model():
    """hf engine on CUDA: training and sampling share one copy of the weights; after a task's adapter is deleted
    the base model scores exactly as before, and the next task's adapter starts from it."""
    from arc_submit.llm import make_engine

    engine = make_engine("hf", "tiny", device="cuda", max_model_len=4096)
    try:
        examples, test_input = flip_task(0)
        prompt = prompts.transduction_prompt(OURS, examples, test_input, engine.tokenizer).text
        answer = prompts.transduction_target(OURS, test_input[:, ::-1], engine.tokenizer)
        base = engine.score([TrainingText.pair(prompt, answer)])[0]
        for task in range(3):
            ex, _ = flip_task(task)
            pairs = pairs_of(ex, engine)
            adapter = engine.train_adapter(f"task-{task}", pairs, TrainSettings(epochs=10, max_steps=8, lora_rank=8,
                                                                                lora_alpha=16, learning_rate=3e-3))
            assert adapter.steps == 8 and adapter.last_loss < adapter.first_loss
            tuned = engine.score([TrainingText.pair(prompt, answer)], adapter)[0]
            assert tuned != pytest.approx(base, abs=1e-4)  # the adapter changes the model
            assert engine.generate([prompt], Sampling(n=2, max_tokens=8, temperature=1.0), adapter)[0]
            engine.delete_adapter(adapter)
            assert engine.score([TrainingText.pair(prompt, answer)])[0] == pytest.approx(base, abs=1e-4)  # back to the base
    finally:
        engine.close()


def pairs_of(examples, engine):
    """Leave-one-out training pairs as the transduction solver makes them (the identity view, no length cap)."""
    from arc_submit.augment import Augmentation
    from arc_submit.solvers import transduction
    from arc_submit.tasks import Task

    return transduction.training_texts(Task("pairs", tuple(examples), ()), [Augmentation()], engine, OURS, None, {})
