"""The per-task loop under L4 emulation (22.3 GiB left on a bigger card), through `pipeline.run`, for random-weight
models of real shapes (Llama architecture with the published dimensions: tests/data/model_shapes/).

    python benchmarks/l4.py --shapes qwen2.5-0.5b qwen3-4b --engine hf --tasks 10 --minutes 3 --out OUT
    python benchmarks/l4.py --shapes qwen3-4b --engine vllm --task-ids "$LONG" --solver-options '{"scorer": "augmented"}'

LONG (LONG_PROMPT_TASKS below): the ARC-AGI-2 evaluation tasks whose transduction prompts with the tiny
tokenizer come nearest 8192 tokens (scoring pairs of about 7-8k tokens: what stresses vLLM's prompt logits).

Per shape: build the model on the GPU (bf16, the tiny tokenizer), then one worker with `emulate_gpu_gib: 22.3`
runs transduction with test-time training at the 2025 winner's settings (LoRA rank 32, sequences up to 8192
tokens, 8 views sampled) on the first N ARC-AGI-2 evaluation tasks. Prints a table: the memory plan, tasks
settled, out-of-memory notes, peak GPU memory of the worker (nvidia-smi less the ballast), peak host RSS / PSS of
the worker, engine start-up, seconds per phase (from the workers' log lines, given with --log).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from arc_submit.config import EngineConfig, RunConfig, SolverConfig  # noqa: E402
from arc_submit.journal import read_events  # noqa: E402

SHAPES = ROOT / "tests" / "data" / "model_shapes"
# Longest prompt + answer budget with the tiny tokenizer, default prompt format (counted 2026-12-03): 981571dc
# 8468+934 and d8e07eb2 7699+694 (over 8192: an example is dropped), 9aaea919 6597+934, b99e7126 6177+874,
# 7c66cb00 5337+754, 0934a4d8 4861+76.
LONG_PROMPT_TASKS = "981571dc,d8e07eb2,9aaea919,b99e7126,7c66cb00,0934a4d8"
NVARC = dict(ttt_augmentations=16, ttt_epochs=1, lora_rank=32, lora_alpha=64, max_seq_len=8192, n_augmentations=8,
             learning_rate=1e-4)


def build_shaped_model(name: str, folder: Path) -> Path:
    """Random bf16 weights of the named shape, initialised on the GPU, saved with the tiny tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from arc_submit.llm.tiny import build_tokenizer

    if (folder / "config.json").exists():
        return folder
    cfg = json.loads((SHAPES / f"{name}.json").read_text())
    tokenizer = build_tokenizer(512)
    config = LlamaConfig(vocab_size=cfg["vocab_size"], hidden_size=cfg["hidden_size"],
                         intermediate_size=cfg["intermediate_size"], num_hidden_layers=cfg["num_hidden_layers"],
                         num_attention_heads=cfg["num_attention_heads"],
                         num_key_value_heads=cfg["num_key_value_heads"], head_dim=cfg.get("head_dim"),
                         max_position_embeddings=16384, tie_word_embeddings=cfg["tie_word_embeddings"],
                         torch_dtype="bfloat16", eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=None)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    del model
    torch.cuda.empty_cache()
    return folder


def phases_from_log(log_path: Path) -> dict[str, list[float]]:
    """`task X transduction: training 1.23s (...)` lines -> seconds per phase, over tasks."""
    out = defaultdict(list)
    if log_path and log_path.exists():
        for m in re.finditer(r"task \S+ transduction: ([a-z ]+?) (\d+\.\d+)s", log_path.read_text(errors="replace")):
            out[m.group(1)].append(float(m.group(2)))
    return out


def challenges_of(task_ids: str, out: Path) -> str:
    """The named ARC-AGI-2 evaluation tasks as a challenges file (solutions beside it); none named: the dataset."""
    if not task_ids:
        return "arc-agi-2/evaluation"
    from arc_submit.tasks import load_tasks, select_tasks, write_challenges

    path = out / "l4_challenges.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_challenges(select_tasks(load_tasks("arc-agi-2/evaluation"), task_ids.split(","), "arc-agi-2/evaluation"),
                     path, with_solutions=True)
    return str(path)


def run_shape(name: str, engine: str, n_tasks: int, minutes: float, out: Path, options: dict,
              challenges: str = "arc-agi-2/evaluation", solver_options: dict | None = None) -> dict:
    from arc_submit.pipeline import run

    model = build_shaped_model(name, Path("/tmp/l4-models") / name)
    config = RunConfig(challenges=challenges, n_tasks=n_tasks, out_dir=str(out / name), workers=1,
                       time_limit_s=minutes * 60 + 60, safety_margin_s=30, emulate_gpu_gib=22.3,
                       monitor_interval_s=1.0,
                       engine=EngineConfig(engine, str(model), {"max_model_len": 8192, **options}),
                       solver=SolverConfig("transduction", {**NVARC, **(solver_options or {})}),
                       priority=["transduction"])
    t0 = time.time()
    result = run(config)
    events = list(read_events(out / name / "journals"))
    ready = [e for e in events if e["event"] == "ready"]
    notes = [e["text"] for e in events if e["event"] == "note"]
    failures = [e["error"] for e in events if e["event"] in ("load-failed", "error")]
    ballast_mib = 0.0
    for line in (out / name / "run.log").read_text().splitlines():
        m = re.search(r"L4 emulation on GPU \S+: held ([\d.]+) of", line)
        if m:
            ballast_mib = float(m.group(1)) * 1024
    plan = next((line.split("memory plan: ", 1)[1] for line in (out / name / "run.log").read_text().splitlines()
                 if "memory plan: " in line), "(in the worker's log)")
    return {"shape": name, "engine": engine, "wall_s": round(time.time() - t0, 1), "statuses": result.statuses,
            "load_s": [e.get("load_s") for e in ready], "oom_notes": notes, "failures": failures[:3],
            "peak_gpu_mib_incl_ballast": result.peak_gpu_mib, "ballast_mib": round(ballast_mib),
            "peak_worker_gpu_mib": {g: round(m - ballast_mib) for g, m in result.peak_gpu_mib.items()},
            "peak_rss_gib": {k: round(v, 2) for k, v in result.peak_rss_gib_by_tree.items()},
            "peak_private_gib": {k: round(v, 2) for k, v in result.peak_private_gib_by_tree.items()}, "plan": plan}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--shapes", nargs="+", default=["qwen2.5-0.5b", "qwen3-4b"])
    p.add_argument("--engine", default="hf")
    p.add_argument("--tasks", type=int, default=10)
    p.add_argument("--minutes", type=float, default=3.0)
    p.add_argument("--out", default="runs/l4")
    p.add_argument("--engine-options", default="{}", help='more engine options as JSON, e.g. {"max_lora_rank": 32}')
    p.add_argument("--log", help="the file this run's stderr goes to (worker log lines), for the phase table")
    p.add_argument("--task-ids", default="", help=f"ARC-AGI-2 evaluation task ids, comma-separated, instead of the "
                   f"first --tasks (long prompts: {LONG_PROMPT_TASKS})")
    p.add_argument("--solver-options", default="{}", help='transduction options over NVARC\'s, as JSON, e.g. '
                   '{"scorer": "augmented"}')
    args = p.parse_args()
    out = Path(args.out)
    challenges = challenges_of(args.task_ids, out)
    rows = [run_shape(s, args.engine, args.tasks, args.minutes, out, json.loads(args.engine_options), challenges,
                      json.loads(args.solver_options)) for s in args.shapes]
    (out / "l4.json").write_text(json.dumps(rows, indent=1))
    print("| shape | engine | settled | OOM notes | load s | peak worker GPU MiB | peak RSS GiB | peak private GiB "
          "| wall s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['shape']} | {r['engine']} | {r['statuses']} | {len(r['oom_notes'])} | {r['load_s']} | "
              f"{r['peak_worker_gpu_mib']} | {r['peak_rss_gib']} | {r['peak_private_gib']} | {r['wall_s']} |")
    for r in rows:
        print(f"plan {r['shape']}: {r['plan']}")
        for f in r["failures"]:
            print(f"failure {r['shape']}: {f[:300]}")
    if args.log and Path(args.log).exists():
        for line in Path(args.log).read_text(errors="replace").splitlines():
            if "memory plan: " in line or "MemoryPlanError" in line or "out of memory" in line:
                print(line[line.find("memory plan"):] if "memory plan: " in line else line[-300:])
    phases = phases_from_log(Path(args.log)) if args.log else {}
    if phases:
        print("| phase | tasks | mean s | max s |")
        print("|---|---|---|---|")
        for name, secs in phases.items():
            print(f"| {name} | {len(secs)} | {sum(secs) / len(secs):.2f} | {max(secs):.2f} |")


if __name__ == "__main__":
    main()
