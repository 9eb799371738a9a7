"""`arc-submit run` on CPU with the models competitors bring, in miniature: a random model with NVARC's 16-token
vocabulary under the `nvarc` recipe, and a Llama-chat-templated model taught BARC's format under
`barc-induction`, on real ARC-AGI-2 tasks; and the preflight refusing a recipe the model's tokenizer cannot carry.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from arc_submit.journal import read_events
from arc_submit.tasks import load_tasks, write_challenges

DATA = Path(__file__).parent / "data"
STANDIN_LIBRARY = DATA / "barc_common_standin"  # a stand-in double of BARC's common.py (tests/test_barc_programs.py)
BARC_PROGRAM = DATA / "barc_programs" / "c9e6f938.py"  # short grids, so the model double learns it in seconds


def small_eval_tasks(n: int) -> dict:
    tasks = load_tasks("arc-agi-2/evaluation")
    return {t.id: t for t in sorted(tasks.values(), key=lambda t: t.cost_estimate())[:n]}


def run_cli(tmp_path: Path, config: dict) -> subprocess.CompletedProcess:
    """`arc-submit run --config` in a process of its own, as a competitor runs it; its log is its stderr."""
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), *sys.path])}
    return subprocess.run([sys.executable, "-m", "arc_submit.cli", "run", "--config", str(path)], env=env,
                          capture_output=True, text=True, timeout=900)


def base_config(tmp_path: Path, challenges: Path, model: str, solver: dict, limit_s: float) -> dict:
    return {"challenges": str(challenges), "out_dir": str(tmp_path / "run"), "workers": 1, "time_limit_s": limit_s,
            "safety_margin_s": 10, "engine": {"kind": "hf", "model": model}, "solvers": [solver]}


def solver_lines(out_dir: Path) -> list[dict]:
    return [e for e in read_events(out_dir / "journals") if e["event"].startswith("solver")]


@pytest.mark.slow
def test_nvarc_recipe_trains_on_whole_tasks_and_samples(tmp_path):
    """NVARC's vocabulary cannot encode a blank line; under its recipe test-time training runs in its layout
    (each augmented task one sequence, loss on every output, its LoRA with embeddings and LM head) and sampling
    follows, on 2 ARC-AGI-2 tasks, with no tokenizer error."""
    tasks = small_eval_tasks(2)
    challenges = tmp_path / "two_challenges.json"
    write_challenges(tasks, challenges)
    solver = {"name": "transduction", "options": {"recipe": "nvarc", "n_augmentations": 2, "ttt_augmentations": 2,
                                                  "ttt_steps": 2, "train_fraction": 0.8}}
    done = run_cli(tmp_path, base_config(tmp_path, challenges, "tiny-nvarc", solver, 240))
    log = done.stderr
    assert done.returncode == 0, log[-3000:]
    assert "Traceback" not in log and "tokeniz" not in log.lower(), log[-3000:]
    for task_id in tasks:
        # data prep: one training text per augmentation (leave-one-out would make one per train example each)
        assert re.search(rf"task {task_id} transduction: data prep [\d.]+s \(2 training pairs, \d+ prompts", log), log
        trained = re.search(rf"adapter transduction-{task_id}: (\d+)/2 steps", log)
        assert trained and int(trained.group(1)) >= 1, log[-3000:]
        assert re.search(rf"task {task_id} transduction: sampling [\d.]+s \(\d+ samples", log), log[-3000:]
    done_lines = [e for e in solver_lines(tmp_path / "run") if e["event"] == "solver-done"]
    assert sorted(e["task_id"] for e in done_lines) == sorted(tasks) and not any("error" in e for e in done_lines)


def barc_trained_model(tmp_path: Path, task, code: str) -> Path:
    """TEST DOUBLE of BARC's induction model: the tiny Llama-3.1-templated model, fine-tuned here (all weights)
    until it writes `code` for the task's identity prompt in BARC's format. It stands for the published 8B model,
    which cannot be downloaded here; the format it learnt is the recipe's, rendered by the package."""
    import torch
    from transformers import AutoModelForCausalLM

    from arc_submit.llm import prompts
    from arc_submit.llm.engine import TrainingText, TrainSettings
    from arc_submit.llm.recipes import RECIPES
    from arc_submit.llm.tiny import resolve_model
    from arc_submit.llm.tokenizers import load_tokenizer
    from arc_submit.llm.training import run_training, tokenize_text

    base = Path(resolve_model("tiny-llama3"))
    tokenizer = load_tokenizer(base)
    r = RECIPES["barc-induction"]
    prompt = prompts.induction_prompt(r, task.train, [task.test[0].input], tokenizer).text
    text = tokenize_text(tokenizer, TrainingText.pair(prompt, prompts.induction_target(r, code, tokenizer)))
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model on a busy 2-core machine: more threads only wait on each other
    try:
        result = run_training(model, [text], TrainSettings(epochs=60, max_steps=60, learning_rate=3e-3,
                                                           lr_schedule="constant", gradient_checkpointing=False),
                              tokenizer.pad_token_id or tokenizer.eos_token_id, "cpu")
    finally:
        torch.set_num_threads(threads)
    assert result.losses[-1] < 0.05, result.losses[-5:]
    out = tmp_path / "barc-double"
    model.save_pretrained(out)
    for f in base.iterdir():
        if f.name.startswith(("tokenizer", "special_tokens", "chat_template")):
            shutil.copy(f, out / f.name)
    return out


@pytest.mark.slow
def test_barc_recipe_renders_prompts_and_executes_programs(tmp_path):
    """Under `barc-induction` the induction solver renders BARC's prompts through the model's chat template (colour
    names, one test input per prompt, the preamble prefilled), reads the program out of the continuation and runs
    it on a user's common.py (a stand-in lacking Color.PURPLE / BROWN, which the program uses): the task the
    program solves is answered, the other ARC-AGI-2 task runs through the same path."""
    task_id = "c9e6f938"
    solved = load_tasks("arc-agi-2/training")[task_id]
    other = small_eval_tasks(1)
    tasks = {task_id: solved, **other}
    model = barc_trained_model(tmp_path, solved, BARC_PROGRAM.read_text())
    challenges = tmp_path / "two_challenges.json"
    write_challenges(tasks, challenges)
    solver = {"name": "induction", "options": {"recipe": "barc-induction", "predictions_per_epoch": 2,
                                               "prompt_augmentations": 1, "temperature": 0.0, "epochs": 1,
                                               "max_tokens": 300, "library_dir": str(STANDIN_LIBRARY)}}
    done = run_cli(tmp_path, base_config(tmp_path, challenges, str(model), solver, 300))
    log = done.stderr
    assert done.returncode == 0, log[-3000:]
    assert re.search(rf"task {task_id} induction: execution [\d.]+s \(epoch 0: [12] programs from 2 samples, "
                     rf"[12] fit all train\)", log), log[-4000:]
    submission = json.loads((tmp_path / "run" / "submission.json").read_text())
    assert np.array_equal(submission[task_id][0]["attempt_1"], solved.test[0].output)
    (other_id,) = other
    assert re.search(rf"task {other_id} induction: sampling", log), log[-3000:]


def test_preflight_refuses_a_recipe_the_tokenizer_cannot_carry(tmp_path):
    """Our own layout (instructions in words, a blank line after each answer) under NVARC's 16-token vocabulary:
    the commit run fails before any model work, naming the recipe, the model and what does not survive."""
    from arc_submit.config import EngineConfig, RunConfig, SolverConfig
    from arc_submit.llm.tiny import resolve_model
    from arc_submit.preflight import PreflightError, preflight

    def config(options):
        return RunConfig(challenges="arc-agi-2/evaluation", out_dir=str(tmp_path / "run"), n_tasks=1,
                         engine=EngineConfig(kind="hf", model="tiny-nvarc"),
                         solver=SolverConfig("transduction", options))

    with pytest.raises(PreflightError) as refused:
        preflight(config({"recipe": "arc-submit"}), strict=True)
    message = str(refused.value)
    assert "recipe arc-submit's prompt" in message and "tiny-nvarc" in message
    assert "recipe arc-submit's training target" in message  # the answer's blank line
    assert preflight(config({"recipe": "nvarc"}), strict=True) == []
    # NVARC's LoRA trains the embeddings and LM head: the vllm engine cannot serve it, and says so first.
    vllm = RunConfig(challenges="arc-agi-2/evaluation", out_dir=str(tmp_path / "run"), n_tasks=1,
                     engine=EngineConfig(kind="vllm", model=resolve_model("tiny-nvarc")),
                     solver=SolverConfig("transduction", {"recipe": "nvarc"}))
    from arc_submit.preflight import check_recipes

    problems = check_recipes(vllm)
    assert any("LoRA on embed_tokens, lm_head cannot be served by vLLM" in p and "use engine hf" in p
               for p in problems), problems
