"""Sampling and scoring with transformers (`generate` and teacher forcing) on whatever model the engine hands in:
the base model, or a peft model with the task's adapter active. The part both transformers engines share: `hf`,
and `unsloth` without fast_inference. The engine chooses the model and the adapter; this part batches.
"""

from __future__ import annotations

from typing import Sequence

from ..budget import Deadline
from .engine import Generation, Sampling, Search, SearchResult
from .engine import TrainingText
from .training import TokenizedText, completion_logprobs, prompt_ids, tokenize_text

LOGIT_BUDGET = 2 ** 27  # logits (tokens × vocabulary) one scoring batch may hold: 0.5 GiB in fp32


def prepare_tokenizer(tokenizer):
    """Pad on the left (generation continues right after each prompt); with EOS where there is no pad token
    (e.g. Llama-3): attention masks keep it out of attention."""
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


class HFSampler:
    # generate(num_return_sequences=n) expands the batch before the prefill: the prompt is processed once per
    # sample, and once more per sample for the log-probability pass. The engines holding this sampler say so.
    prefills_per_sample = True

    def __init__(self, tokenizer, device, max_batch_sequences: int = 64):
        self.tokenizer = prepare_tokenizer(tokenizer)
        self.device = device
        self.max_batch_sequences = max(1, max_batch_sequences)

    def generate(self, model, prompts: Sequence[str], sampling: Sampling) -> list[list[Generation]]:
        """For each prompt, `sampling.n` samples from `model` (call inside the adapter's context)."""
        import torch

        greedy = sampling.temperature == 0
        per_prompt = 1 if greedy else sampling.n  # greedy samples are all the same text: compute one
        if sampling.seed is not None:
            torch.manual_seed(sampling.seed)
        # Batches of whole prompts (all their samples together); a prompt wanting more samples than one
        # batch holds is split into several rounds.
        rounds = []  # (prompt index, samples in this round)
        cap = self.max_batch_sequences
        for i in range(len(prompts)):
            left = per_prompt
            while left > 0:
                rounds.append((i, min(left, cap)))
                left -= rounds[-1][1]
        results: list[list[Generation]] = [[] for _ in prompts]
        batch: list[tuple[int, int]] = []
        with torch.inference_mode():
            for item in rounds + [None]:
                if item is not None and (not batch or (sum(k for _, k in batch) + item[1] <= cap
                                                         and all(k == item[1] for _, k in batch))):
                    batch.append(item)
                    continue
                if batch:
                    self._generate_batch(model, prompts, batch, sampling, greedy, results)
                batch = [item] if item is not None else []
        if greedy and sampling.n > 1:
            results = [r * sampling.n for r in results]
        return results

    def _generate_batch(self, model, prompts, batch, sampling, greedy, results):
        """One generate() call: prompts `batch` (all with the same number of samples per prompt)."""
        import torch

        per_prompt = batch[0][1]
        encoded = [prompt_ids(self.tokenizer, prompts[i]) for i, _ in batch]
        width = max(len(e) for e in encoded)
        pad = self.tokenizer.pad_token_id
        ids = torch.tensor([[pad] * (width - len(e)) + e for e in encoded], device=self.device)
        mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in encoded], device=self.device)
        kwargs = dict(max_new_tokens=sampling.max_tokens, num_return_sequences=per_prompt,
                      eos_token_id=self.tokenizer.eos_token_id, pad_token_id=pad)
        if greedy:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p, top_k=0)
        if sampling.stop:
            kwargs.update(stop_strings=list(sampling.stop), tokenizer=self.tokenizer)
        out = model.generate(input_ids=ids, attention_mask=mask, **kwargs)
        new_tokens = out[:, width:].tolist()
        samples = []
        for row in new_tokens:
            eos_at = next((j for j, t in enumerate(row) if t == self.tokenizer.eos_token_id), None)
            if eos_at is None:  # padding after a stop string, or cut at max_tokens
                tokens = row
                while tokens and tokens[-1] == pad and pad != self.tokenizer.eos_token_id:
                    tokens = tokens[:-1]
            else:
                tokens = row[:eos_at + 1]  # EOS counts: its probability says the model meant to stop there
            text = self.tokenizer.decode(tokens, skip_special_tokens=True)
            finished = eos_at is not None
            for stop in sampling.stop:
                if stop in text:
                    text, finished = text[:text.index(stop)], True
            samples.append((tokens, text, finished))
        logprobs = [None] * len(samples)
        if sampling.logprobs:  # a sample of no tokens (all padding) has no log-probability to sum
            scored = [k for k, (tokens, _, _) in enumerate(samples) if tokens]
            prompt_of = [encoded[k // per_prompt] for k in scored]
            sums = self.logprob_sums(model, [TokenizedText(p + samples[k][0], [False] * len(p) + [True] * len(samples[k][0]))
                                             for k, p in zip(scored, prompt_of)])
            for k, total in zip(scored, sums):
                logprobs[k] = total
        for k, (tokens, text, finished) in enumerate(samples):
            results[batch[k // per_prompt][0]].append(Generation(text, len(tokens), finished, logprobs[k], tuple(tokens)))

    def dfs(self, model, prompts: Sequence[str], search: Search, deadline: Deadline | None = None) -> SearchResult:
        """Depth-first search over answers (llm/dfs.py) on `model`, max_batch_sequences prompts per batch (each
        prompt is one KV cache row, processed once)."""
        import torch

        from .dfs import run_dfs

        with torch.inference_mode():
            return run_dfs(model, self.tokenizer, self.device, [prompt_ids(self.tokenizer, p) for p in prompts],
                           search, deadline, self.max_batch_sequences)

    def score(self, model, pairs: Sequence[TrainingText]) -> list[float]:
        """Sum of log p over each text's trained segments (an answer's end token included: it penalises an answer
        that should go on)."""
        import torch

        with torch.inference_mode():
            return self.logprob_sums(model, [tokenize_text(self.tokenizer, t) for t in pairs])

    def logprob_sums(self, model, pairs: list[TokenizedText]) -> list[float]:
        """Teacher-forced log-probabilities of given token sequences, in batches (raw model distribution).

        A batch's logits span every sequence's completion (from the shortest prompt to the longest sequence)
        times the vocabulary, in fp32 for the log-softmax: 64 scoring pairs with a 150k vocabulary asked for 32 GiB
        on an H100 once. So pairs go in length order and a batch holds at most LOGIT_BUDGET logits."""
        vocab = int(getattr(model.config, "vocab_size", 0) or len(self.tokenizer))
        order = sorted(range(len(pairs)), key=lambda i: (pairs[i].first_trained, len(pairs[i].input_ids)))
        out: dict[int, float] = {}
        batch: list[int] = []

        def span(members) -> int:
            return max(len(pairs[i].input_ids) for i in members) - min(pairs[i].first_trained for i in members) + 1

        def flush():
            if batch:
                sums, _ = completion_logprobs(model, [pairs[i] for i in batch], self.tokenizer.pad_token_id,
                                              self.device)
                out.update({i: float(s) for i, s in zip(batch, sums)})
                batch.clear()

        for i in order:
            grown = batch + [i]
            if batch and (len(grown) > self.max_batch_sequences or len(grown) * span(grown) * vocab > LOGIT_BUDGET):
                flush()
            batch.append(i)
        flush()
        return [out[i] for i in range(len(pairs))]
