"""The vLLM engine with one shared copy of the weights, under L4 emulation: start-up, the per-task cycle (train a
LoRA, sample with it, delete it), output tok/s with and without the task's LoRA, peak GPU memory, host RSS and PSS.

    python benchmarks/shared_engine.py --shape qwen2.5-0.5b --out runs/shared   # on a GPU machine with vllm

One process, as a worker is: the ballast leaves the card 22.3 GiB, the engine sizes vLLM's share from free memory
(memory plan), CUDA graphs on, engine core in this process. Per task: LoRA rank 32 on the task's prompts (16
augmented copies of the leave-one-out pairs, `--steps` optimizer steps), then n samples of `--tokens` tokens for
one prompt with the LoRA, then the same without. Random-weight models of real shapes (tests/data/model_shapes/)
with the tiny tokenizer, so samples are noise: speed and memory are what is measured. Prints a table, writes
OUT/shared_engine.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from l4 import build_shaped_model  # noqa: E402

GIB = 2 ** 30
DETOKENIZE = os.environ.get("BENCH_DETOKENIZE", "0") == "1"  # the engine decodes at the end (vllm_engine.py)


class PeakMemory:
    """Peak host RSS and PSS of this process (engine core included: it runs here) and lowest free GPU memory."""

    def __init__(self, interval_s: float = 0.25):
        import psutil

        self.proc = psutil.Process()
        self.rss = self.pss = 0.0
        self.min_free_gib = float("inf")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval_s,), daemon=True)
        self._thread.start()

    def _run(self, interval_s):
        import torch

        while not self._stop.wait(interval_s):
            info = self.proc.memory_full_info()
            self.rss, self.pss = max(self.rss, info.rss / GIB), max(self.pss, info.pss / GIB)
            if torch.cuda.is_initialized():
                self.min_free_gib = min(self.min_free_gib, torch.cuda.mem_get_info()[0] / GIB)

    def now(self) -> dict:
        """RSS and PSS at this moment (to tell start-up's peak from the task loop's)."""
        info = self.proc.memory_full_info()
        return {"rss_gib": round(info.rss / GIB, 2), "pss_gib": round(info.pss / GIB, 2)}

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        return {"peak_rss_gib": round(self.rss, 2), "peak_pss_gib": round(self.pss, 2),
                "min_free_gpu_gib": round(self.min_free_gib, 2)}


def task_prompts(engine, seed: int):
    """An ARC-style task (10×10 grids, flip) as prompts: training pairs and one test prompt."""
    import numpy as np

    from arc_submit.augment import augmentation_set
    from arc_submit.llm import prompts
    from arc_submit.llm.recipes import recipe
    from arc_submit.solvers import transduction
    from arc_submit.tasks import Example, Task

    rng = np.random.default_rng(seed)
    grids = [rng.integers(0, 10, (10, 10)).astype(np.int8) for _ in range(4)]
    examples = [Example(g, g[:, ::-1].copy()) for g in grids[:3]]
    # Leave-one-out pairs of 16 augmentations, as the transduction solver makes them (no length cap).
    ours = recipe("arc-submit")
    pairs = transduction.training_texts(Task("bench", tuple(examples), ()), augmentation_set(16, rng, n_train=3),
                                        engine, ours, None, {})
    return pairs, prompts.transduction_prompt(ours, examples, grids[3], engine.tokenizer).text


def tok_per_s(engine, prompt, n, tokens, adapter=None, repeats=3) -> float:
    """Output tokens/s for n samples of exactly `tokens` tokens (EOS ignored: a random model stops anywhere),
    through vLLM directly with the engine's own LoRA request; median of `repeats` (the first loads the LoRA)."""
    import vllm

    from arc_submit.llm.training import prompt_ids

    params = vllm.SamplingParams(n=n, temperature=1.0, max_tokens=tokens, ignore_eos=True, detokenize=DETOKENIZE)
    rates = []
    for _ in range(repeats):
        t0 = time.time()
        (out,) = engine.llm.generate([{"prompt_token_ids": prompt_ids(engine.tokenizer, prompt)}], params,
                                     lora_request=engine.sampler.lora_request(adapter and adapter.name),
                                     use_tqdm=False)
        rates.append(sum(len(c.token_ids) for c in out.outputs) / (time.time() - t0))
    return statistics.median(rates)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--shape", default="qwen2.5-0.5b")
    p.add_argument("--emulate-gib", type=float, default=22.3)
    p.add_argument("--n", type=int, default=128)
    p.add_argument("--tokens", type=int, default=100)
    p.add_argument("--steps", type=int, default=64)
    p.add_argument("--tasks", type=int, default=2)
    p.add_argument("--eager", action="store_true", help="enforce_eager (no CUDA graphs), for comparison")
    p.add_argument("--engine-options", default="{}", help='more engine options as JSON, e.g. '
                   '{"cudagraph_capture_sizes": [1, 8, 64, 128, 512]}')
    p.add_argument("--out", default="runs/shared-engine")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from arc_submit.gpu_ballast import Ballast
    from arc_submit.llm import TrainSettings, make_engine

    model = build_shaped_model(args.shape, Path("/tmp/l4-models") / args.shape)
    row: dict = {"shape": args.shape, "n": args.n, "tokens": args.tokens, "eager": args.eager}
    with Ballast(["0"], keep_gib=args.emulate_gib) as ballast:
        row["ballast"] = ballast.report["0"]
        memory = PeakMemory()
        t0 = time.time()
        row["engine_options"] = options = json.loads(args.engine_options)
        engine = make_engine("vllm", str(model), max_model_len=8192, max_lora_rank=32, enforce_eager=args.eager,
                             **options)
        row["startup_s"] = round(time.time() - t0, 1)
        row["after_startup"] = memory.now()
        row["gpu_memory_utilization"] = engine.kwargs.get("gpu_memory_utilization")
        tasks = []
        for task in range(args.tasks):
            pairs, prompt = task_prompts(engine, task)
            t0 = time.time()
            adapter = engine.train_adapter(f"task-{task}", pairs, TrainSettings(
                max_steps=args.steps, epochs=100, lora_rank=32, lora_alpha=64, max_seq_len=8192, seed=task))
            train_s = time.time() - t0
            with_lora = tok_per_s(engine, prompt, args.n, args.tokens, adapter)
            without = tok_per_s(engine, prompt, args.n, args.tokens)
            engine.delete_adapter(adapter)
            tasks.append({"memory_after": memory.now(), "train_s": round(train_s, 1), "steps": adapter.steps,
                          "prompt_tokens": engine.count_tokens(prompt),
                          "train_tokens": max(len(engine.tokenizer("".join(s for s, _ in t.segments))["input_ids"]) for t in pairs),
                          "loss_first_last": [round(adapter.first_loss, 3), round(adapter.last_loss, 3)],
                          "tok_s_lora": round(with_lora), "tok_s_base": round(without),
                          "lora_ratio": round(with_lora / without, 3)})
            print(json.dumps(tasks[-1]), flush=True)
        row["tasks"] = tasks
        row.update(memory.stop())
        engine.close()
    (out / "shared_engine.json").write_text(json.dumps(row, indent=1))
    print("| shape | graphs | start-up s | train s (steps) | tok/s base | tok/s LoRA | ratio | RSS / PSS GiB after "
          "start-up | after the task | peak | lowest free GPU GiB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    start = row["after_startup"]
    for t in tasks:
        after = t["memory_after"]
        print(f"| {args.shape} | {not args.eager} | {row['startup_s']} | {t['train_s']} ({t['steps']}) | "
              f"{t['tok_s_base']} | {t['tok_s_lora']} | {t['lora_ratio']} | {start['rss_gib']} / {start['pss_gib']} "
              f"| {after['rss_gib']} / {after['pss_gib']} | {row['peak_rss_gib']} / {row['peak_pss_gib']} | "
              f"{row['min_free_gpu_gib']} |")
    print(f"engine options: {row['engine_options']}")
    print(f"ballast: {row['ballast']}; gpu_memory_utilization {row['gpu_memory_utilization']}")


if __name__ == "__main__":
    main()
