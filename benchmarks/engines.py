"""Engine speed and memory on a GPU: vLLM and transformers side by side, random-weight models of real shapes.

    python benchmarks/engines.py all --shapes qwen0.5b llama8b --out runs/bench   # every measurement, then tables
    python benchmarks/engines.py one --shape qwen0.5b --engine vllm --out runs/bench   # one engine, one process

Each (shape, engine) runs in its own process (clean GPU memory, its own peak host RSS) and appends one JSON
line to OUT/results.jsonl; `all` prints the tables from that file. What is measured:
- sampling: output tokens/s for one ARC-style prompt (~850 tokens) at n = 8/32/128/512 samples of 100 tokens
- LoRA training (peft, rank 32, all linear layers, batch 1, gradient checkpointing): samples/s at 2k and 8k tokens
- per-task overhead: a new adapter's set-up (fresh LoRA + optimizer + tokenising); for vLLM also saving it and
  the first request that loads it, over a request with no adapter
- peak host RSS of the process and its children (sampled every 0.1 s)

Models: qwen0.5b (Qwen2.5-0.5B shape) is written to disk with random weights and loaded the normal way;
llama8b (Llama-3.1-8B shape) gets random weights without a disk round trip (vLLM load_format=dummy,
transformers from_config on the GPU), which spares 2 × 16 GB of writes and reads inside a 10-minute call.
The tokenizer is the tiny one padded to the model's vocabulary.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

SHAPES = {
    "qwen0.5b": dict(model_type="qwen2", hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                     num_attention_heads=14, num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True,
                     rope_theta=1000000.0, max_position_embeddings=32768),
    "llama8b": dict(model_type="llama", hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                    num_attention_heads=32, num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=False,
                    rope_theta=500000.0, max_position_embeddings=131072),
}
SAMPLE_COUNTS = (8, 32, 128, 512)
TRAIN_LENGTHS = (2048, 8192)
SAVED_WEIGHTS = {"qwen0.5b"}  # the others use random weights made in memory


class PeakRSS:
    """Peak resident memory of this process plus its children, sampled in a thread."""

    def __init__(self, interval: float = 0.1):
        import psutil

        self.proc, self.peak, self.interval = psutil.Process(), 0, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                total = self.proc.memory_info().rss + sum(c.memory_info().rss for c in self.proc.children(True))
                self.peak = max(self.peak, total)
            except Exception:
                pass
            self._stop.wait(self.interval)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak / 2**30


def model_folder(shape: str, root: Path) -> Path:
    """config.json + tokenizer (+ random safetensors weights for SAVED_WEIGHTS shapes), built once."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from arc_submit.llm import tiny

    path = root / f"random-{shape}"
    if (path / "config.json").exists():
        return path
    spec = dict(SHAPES[shape])
    tok = tiny.build_tokenizer()
    config = AutoConfig.for_model(spec.pop("model_type"), **spec, eos_token_id=tok.eos_token_id,
                                  pad_token_id=tok.pad_token_id, bos_token_id=None, torch_dtype="bfloat16")
    path.mkdir(parents=True, exist_ok=True)
    if shape in SAVED_WEIGHTS:
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16).to("cuda")
        model.save_pretrained(path, safe_serialization=True)
        del model
        torch.cuda.empty_cache()
    config.save_pretrained(path)
    tok.save_pretrained(path)
    tiny.pad_tokenizer_vocab(path, config.vocab_size)
    return path


def arc_style_prompt() -> str:
    """Three 10×10 examples and a test input, as the transduction prompt writes them (~850 tokens)."""
    import numpy as np

    from arc_submit.llm import prompts
    from arc_submit.llm.recipes import recipe
    from arc_submit.tasks import Example

    rng = np.random.default_rng(0)
    grids = [rng.integers(0, 10, (10, 10)).astype(np.int8) for _ in range(7)]
    examples = [Example(grids[i], grids[i + 1]) for i in (0, 2, 4)]
    return prompts.transduction_prompt(recipe("arc-submit"), examples, grids[6]).messages[-1]["content"]


def train_pair(tokenizer, n_tokens: int):
    """A (prompt, completion) TrainingText of about n_tokens tokens: a long grid prompt, a 30×30 grid answer."""
    import numpy as np

    from arc_submit.llm import prompts
    from arc_submit.llm.engine import TrainingText
    from arc_submit.llm.recipes import recipe

    rng = np.random.default_rng(n_tokens)
    answer = prompts.transduction_target(recipe("arc-submit"), rng.integers(0, 10, (30, 30)), tokenizer)
    n_answer = len(tokenizer(answer, add_special_tokens=False)["input_ids"])
    digits = "".join(str(d) for d in rng.integers(0, 10, 8 * n_tokens))
    body = "\n".join(digits[i:i + 29] for i in range(0, len(digits), 29))  # 30 tokens per line
    prompt = body[: (n_tokens - n_answer) * 29 // 30]
    ids = tokenizer(prompt)["input_ids"]
    prompt = tokenizer.decode(ids[: n_tokens - n_answer])
    return TrainingText.pair(prompt, answer)


def measure_sampling(engine, prompt: str) -> dict:
    from arc_submit.llm import Sampling

    engine.generate([prompt], Sampling(n=4, temperature=1.0, max_tokens=16, seed=1))  # warm-up
    out = {}
    for n in SAMPLE_COUNTS:
        t0 = time.time()
        (samples,) = engine.generate([prompt], Sampling(n=n, temperature=1.0, max_tokens=100, seed=n))
        seconds = time.time() - t0
        tokens = sum(s.n_tokens for s in samples)
        out[str(n)] = {"tokens": tokens, "seconds": round(seconds, 3), "tok_per_s": round(tokens / seconds, 1)}
        print(f"  sampling n={n}: {tokens} tokens in {seconds:.2f}s = {tokens / seconds:.0f} tok/s", flush=True)
    return out


def measure_training(engine, tokenizer) -> dict:
    """samples/s at each length (second adapter, after a warm-up one) and the per-task set-up times."""
    from arc_submit.llm import TrainSettings

    out = {}
    for n_tokens in TRAIN_LENGTHS:
        pair = train_pair(tokenizer, n_tokens)
        steps = 6 if n_tokens <= 2048 else 4
        settings = TrainSettings(max_steps=steps, epochs=steps, lora_rank=32, lora_alpha=64, learning_rate=1e-4,
                                 max_seq_len=n_tokens + 64, gradient_checkpointing=True)
        warm = engine.train_adapter(f"warm-{n_tokens}", [pair], settings)
        engine.delete_adapter(warm)
        adapter = engine.train_adapter(f"task-{n_tokens}", [pair], settings)
        engine.delete_adapter(adapter)
        rate = adapter.steps / adapter.train_s
        out[str(n_tokens)] = {"samples_per_s": round(rate, 3), "steps": adapter.steps,
                              "train_s": round(adapter.train_s, 2), "setup_s": round(adapter.setup_s, 3),
                              "first_task_setup_s": round(warm.setup_s, 3),
                              "tokens": len(tokenizer(pair[0] + pair[1])["input_ids"]) + 1}
        print(f"  training {n_tokens} tokens: {rate:.3f} samples/s, set-up {adapter.setup_s:.3f}s "
              f"(first task {warm.setup_s:.3f}s)", flush=True)
    return out


def run_one(shape: str, engine_kind: str, root: Path) -> dict:
    from arc_submit.llm.engine import (HFSettings, ModelSettings, UnslothSettings, VLLMSettings,
                                       apply_memory_environment)

    apply_memory_environment(ModelSettings())  # before CUDA starts, or the allocator ignores it
    import torch

    folder = model_folder(shape, root)
    rss = PeakRSS()
    t0 = time.time()
    result = {"shape": shape, "engine": engine_kind, "gpu": torch.cuda.get_device_name(0)}
    prompt = arc_style_prompt()
    if engine_kind == "vllm":
        from arc_submit.llm import Sampling, TrainSettings
        from arc_submit.llm.vllm_engine import VLLMEngine
        import vllm

        options = {} if shape in SAVED_WEIGHTS else {"load_format": "dummy"}
        util = 0.5 if shape in SAVED_WEIGHTS else 0.75
        engine = VLLMEngine(ModelSettings(model=str(folder), max_model_len=4096),
                            VLLMSettings(gpu_memory_utilization=util, max_lora_rank=32, vllm_options=options))
        result.update(version=vllm.__version__, load_s=round(time.time() - t0, 1),
                      llm_kwargs={k: v for k, v in engine.kwargs.items() if k not in ("model", "tokenizer")})
        result["prompt_tokens"] = engine.count_tokens(prompt)
        result["sampling"] = measure_sampling(engine, prompt)
        if shape in SAVED_WEIGHTS:  # the vLLM engine's own adapter path: train (peft copy) -> save -> LoRARequest
            pair = train_pair(engine.tokenizer, 2048)
            settings = TrainSettings(max_steps=2, epochs=2, lora_rank=32, lora_alpha=64, max_seq_len=4096)
            first = engine.train_adapter("first", [pair], settings)  # loads the training copy
            engine.delete_adapter(first)
            sampling = Sampling(n=8, temperature=1.0, max_tokens=16, seed=0)
            t1 = time.time(); engine.generate([prompt], sampling); base_s = time.time() - t1
            adapter = engine.train_adapter("task", [pair], settings)
            t1 = time.time(); engine.generate([prompt], sampling, adapter); lora_s = time.time() - t1
            result["adapter"] = {"setup_and_save_s": round(adapter.setup_s, 3), "train_s": round(adapter.train_s, 2),
                                 "first_request_with_new_lora_s": round(lora_s, 3),
                                 "same_request_no_lora_s": round(base_s, 3),
                                 "trainer_load_s": round(first.setup_s + first.train_s, 1)}
            print(f"  vllm adapter: set-up+save {adapter.setup_s:.3f}s, first request with it {lora_s:.3f}s "
                  f"(without {base_s:.3f}s)", flush=True)
            engine.delete_adapter(adapter)
        engine.close()
    elif engine_kind == "unsloth":  # training only: its sampling is vLLM's (fast_inference) or transformers'
        import unsloth
        from arc_submit.llm.unsloth_engine import UnslothEngine

        if shape not in SAVED_WEIGHTS:
            raise RuntimeError("unsloth loads weights from disk; only saved-weight shapes are measured")
        engine = UnslothEngine(ModelSettings(model=str(folder), max_model_len=8320),
                               UnslothSettings(fast_inference=False))
        result.update(version=unsloth.__version__, load_s=round(time.time() - t0, 1))
        result["training"] = measure_training(engine, engine.tokenizer)
        engine.close()
    else:
        from arc_submit.llm.hf_engine import HFEngine
        import transformers

        # transformers prefills every sample's copy of the prompt: 512 copies of an 8B prefill do not fit at once.
        batch = 512 if shape in SAVED_WEIGHTS else 128
        settings = ModelSettings(model=str(folder), device="cuda"), HFSettings(max_batch_sequences=batch)
        result["max_batch_sequences"] = batch
        if shape in SAVED_WEIGHTS:
            engine = HFEngine(*settings)
        else:
            from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

            torch.manual_seed(0)
            with torch.device("cuda"):
                model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder), dtype=torch.bfloat16)
            engine = HFEngine(*settings, model=model, tokenizer=AutoTokenizer.from_pretrained(folder))
        result.update(version=transformers.__version__, load_s=round(time.time() - t0, 1))
        result["prompt_tokens"] = engine.count_tokens(prompt)
        result["sampling"] = measure_sampling(engine, prompt)
        result["training"] = measure_training(engine, engine.tokenizer)
        engine.close()
    result["peak_gpu_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 1)  # torch allocations only
    result["peak_host_rss_gib"] = round(rss.stop(), 2)
    result["total_s"] = round(time.time() - t0, 1)
    return result


def tables(rows: list[dict]) -> str:
    lines = ["### Sampling: output tokens/s, one ~850-token prompt, n samples of 100 tokens",
             "| shape | engine | " + " | ".join(f"n={n}" for n in SAMPLE_COUNTS) + " | load s | peak host RSS GiB |",
             "|---|---|" + "---|" * (len(SAMPLE_COUNTS) + 2)]
    for r in rows:
        if "sampling" in r:
            cells = [f"{r['sampling'][str(n)]['tok_per_s']:.0f}" if str(n) in r["sampling"] else "-" for n in SAMPLE_COUNTS]
            lines.append(f"| {r['shape']} | {r['engine']} {r.get('version', '')} | " + " | ".join(cells)
                         + f" | {r.get('load_s', '-')} | {r.get('peak_host_rss_gib', '-')} |")
    lines += ["", "### LoRA training (rank 32, all linear layers, batch 1, gradient checkpointing; hf = peft)",
              "| shape | trainer | tokens | samples/s | per-task set-up s (fresh LoRA + optimizer + tokenise) | first task's set-up s |",
              "|---|---|---|---|---|---|"]
    for r in rows:
        for n, t in r.get("training", {}).items():
            lines.append(f"| {r['shape']} | {r['engine']} | {t['tokens']} | {t['samples_per_s']} | {t['setup_s']} | {t['first_task_setup_s']} |")
    adapters = [r for r in rows if "adapter" in r]
    if adapters:
        lines += ["", "### vLLM engine: a new task's adapter (train on the peft copy, save, LoRARequest)",
                  "| shape | set-up + save s | first request with the new LoRA s | same request, no LoRA s | training copy load s |",
                  "|---|---|---|---|---|"]
        for r in adapters:
            a = r["adapter"]
            lines.append(f"| {r['shape']} | {a['setup_and_save_s']} | {a['first_request_with_new_lora_s']} | "
                         f"{a['same_request_no_lora_s']} | {a['trainer_load_s']} |")
    failed = [r for r in rows if "error" in r]
    if failed:
        lines += ["", "### Not measured"] + [f"- {r['shape']} {r['engine']}: {r['error']}" for r in failed]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    one = sub.add_parser("one")
    one.add_argument("--shape", choices=SHAPES, required=True)
    one.add_argument("--engine", choices=("vllm", "hf", "unsloth"), required=True)
    one.add_argument("--out", default="runs/bench")
    one.add_argument("--models", default="/tmp/arc-bench-models")
    every = sub.add_parser("all")
    every.add_argument("--shapes", nargs="+", choices=SHAPES, default=list(SHAPES))
    every.add_argument("--engines", nargs="+", choices=("vllm", "hf", "unsloth"), default=["vllm", "hf"])
    every.add_argument("--out", default="runs/bench")
    every.add_argument("--models", default="/tmp/arc-bench-models")
    every.add_argument("--timeout", type=float, default=400, help="seconds per (shape, engine) process")
    show = sub.add_parser("table")
    show.add_argument("--out", default="runs/bench")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = out / "results.jsonl"
    if args.cmd == "one":
        try:
            row = run_one(args.shape, args.engine, Path(args.models))
        except Exception as e:
            import traceback
            traceback.print_exc()
            row = {"shape": args.shape, "engine": args.engine, "error": f"{type(e).__name__}: {e}"[:500]}
        with open(results, "a") as f:
            f.write(json.dumps(row) + "\n")
        return 0 if "error" not in row else 1
    if args.cmd == "all":
        for shape in args.shapes:
            for engine in args.engines:
                print(f"== {shape} / {engine}", flush=True)
                cmd = [sys.executable, __file__, "one", "--shape", shape, "--engine", engine, "--out", str(out),
                       "--models", args.models]
                try:
                    subprocess.run(cmd, timeout=args.timeout, env=os.environ.copy())
                except subprocess.TimeoutExpired:
                    with open(results, "a") as f:
                        f.write(json.dumps({"shape": shape, "engine": engine,
                                            "error": f"did not finish in {args.timeout:.0f}s"}) + "\n")
    rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()] if results.exists() else []
    print(tables(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
