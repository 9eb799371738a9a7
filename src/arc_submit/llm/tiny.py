"""A tiny Llama-architecture model and a tokenizer made here, so tests and dry runs work with no model hub.

The tokenizer is a byte-level BPE trained in a second on a built-in corpus (the prompt templates, ARC grids,
Python code), with every digit its own token as in Qwen/Llama-3 tokenizers, and a chat template with
<|im_start|>/<|im_end|> markers. The model has random weights from a seed: it knows nothing of ARC, but it
has the real architecture, so generate, LoRA training and vLLM loading go through the real code paths.

Built once and cached in `$ARC_SUBMIT_CACHE/tiny-<hash>` (default ~/.cache/arc_submit); the hash covers
the shape, the seed and the corpus, so a changed recipe builds a new folder. Same seed: same weights.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger(__name__)

RECIPE_VERSION = 1
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@dataclass(frozen=True)
class TinyShape:
    # head_dim 64: a size every vLLM attention backend supports, so the GPU tests can load it too.
    hidden_size: int = 128
    intermediate_size: int = 256
    num_hidden_layers: int = 2
    num_attention_heads: int = 2
    num_key_value_heads: int = 1
    vocab_size: int = 512
    max_position_embeddings: int = 16384


def cache_root() -> Path:
    return Path(os.environ.get("ARC_SUBMIT_CACHE") or Path.home() / ".cache" / "arc_submit")


def _corpus() -> list[str]:
    """What the tokenizer should cut well: our prompts, grids as text, and Python as induction models write it."""
    import numpy as np

    from ..tasks import Example
    from . import prompts
    from .recipes import INDUCTION_INSTRUCTION, TRANSDUCTION_INSTRUCTION, recipe

    rng = np.random.default_rng(0)
    texts = [TRANSDUCTION_INSTRUCTION, INDUCTION_INSTRUCTION]
    for _ in range(20):
        a = rng.integers(0, 10, size=rng.integers(1, 8, size=2))
        b = rng.integers(0, 10, size=rng.integers(1, 8, size=2))
        ex = [Example(a, b), Example(b, a)]
        for grid in ("plain", "row_numbers", "shape_header"):
            r = recipe("arc-submit", grid)
            texts.append(prompts.transduction_prompt(r, ex, a).messages[-1]["content"] + r.grid.encode(b) + "\n\n")
            texts.append(prompts.induction_prompt(r, ex, [a]).messages[-1]["content"] + "\n")
    texts.append("```python\n" + (
        "import numpy as np\n\n\ndef transform(grid):\n    grid = np.array(grid)\n    out = np.zeros_like(grid)\n"
        "    for r in range(grid.shape[0]):\n        for c in range(grid.shape[1]):\n"
        "            if grid[r, c] != 0:\n                out[r, c] = (grid[r, c] + 1) % 10\n"
        "    return out.tolist()\n").strip() + "\n```\n")
    texts.append("def f(x):\n    return [row[::-1] for row in x] if len(x) > 0 else None  # mirror\n"
                 "while True:\n    break\nclass A:\n    pass\nlambda a, b: a * b + a - b / 2 == 3 and not {} or []\n")
    return texts


def build_tokenizer(vocab_size: int = 512):
    """A transformers fast tokenizer (PreTrainedTokenizerFast), deterministic for a given corpus."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    # Digits split first: one token per cell, as the Qwen and Llama-3 tokenizers do.
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   bos_token=None, unk_token=None, clean_up_tokenization_spaces=False)
    fast.chat_template = CHAT_TEMPLATE
    return fast


def _recipe_hash(shape: TinyShape, seed: int) -> str:
    blob = json.dumps({"v": RECIPE_VERSION, "shape": asdict(shape), "seed": seed, "corpus": _corpus(),
                       "chat": CHAT_TEMPLATE}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def build_tiny_model(path: Path, shape: TinyShape = TinyShape(), seed: int = 0) -> Path:
    """Write tokenizer + random-weight Llama (safetensors, float32) to `path`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tokenizer(shape.vocab_size)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=shape.hidden_size, intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_hidden_layers, num_attention_heads=shape.num_attention_heads,
        num_key_value_heads=shape.num_key_value_heads, max_position_embeddings=shape.max_position_embeddings,
        rope_theta=10000.0, tie_word_embeddings=True, torch_dtype="float32",
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=None)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path


def tiny_model_path(shape: TinyShape = TinyShape(), seed: int = 0, cache_dir: str | os.PathLike | None = None) -> Path:
    """The cached tiny model's folder, built on first use (a second or two). Safe with several processes:
    each builds in a temp folder and the first rename wins."""
    root = Path(cache_dir) if cache_dir else cache_root()
    path = root / f"tiny-{_recipe_hash(shape, seed)}"
    if (path / "config.json").exists():
        return path
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tiny-build-", dir=root))
    try:
        build_tiny_model(tmp, shape, seed)
        try:
            os.rename(tmp, path)
            log.info("built tiny model at %s", path)
        except OSError:  # another process finished first; its copy is identical
            pass
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def resolve_model(model: str, cache_dir: str | os.PathLike | None = None) -> str:
    """'tiny' -> the cached tiny model folder; anything else is a local folder, checked to exist."""
    if model == "tiny":
        return str(tiny_model_path(cache_dir=cache_dir))
    if not Path(model).exists():
        raise FileNotFoundError(f"model folder {model!r} does not exist; attach the model as a Kaggle input and "
                                f"give its path (weights are never downloaded at run time), or use 'tiny'")
    return model


def pad_tokenizer_vocab(tokenizer_dir: str | os.PathLike, vocab_size: int) -> None:
    """Grow a saved tiny tokenizer's vocabulary to `vocab_size` entries with filler tokens, so a model of a real
    shape (Qwen2.5: 151,936; Llama-3: 128,256) can decode every id it samples. Fillers are never produced by
    encoding (no merge makes them); they decode to short ASCII strings."""
    path = Path(tokenizer_dir) / "tokenizer.json"
    spec = json.loads(path.read_text())
    vocab = spec["model"]["vocab"]
    taken = set(vocab.values()) | {t["id"] for t in spec.get("added_tokens", [])}
    for i in range(vocab_size):
        if i not in taken:
            vocab[f"x{i}"] = i
    path.write_text(json.dumps(spec))
