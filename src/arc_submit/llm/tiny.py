"""Tiny random-weight models and their tokenizers, made here, so tests and dry runs work with no model hub.

Three styles (`TinyStyle`), each a name `resolve_model` takes:
- "tiny" (the default): a byte-level BPE trained in a second on a built-in corpus (the prompt templates, ARC
  grids, Python code), every digit its own token as in Qwen/Llama-3 tokenizers, <|im_start|>/<|im_end|> chat
  markers, on a Llama;
- "tiny-nvarc": NVARC's 16-token WordLevel vocabulary (ARC Prize 2025, 1st: Qwen3-4B cut to the digits, one
  newline token, `user`, `assistant` and three special tokens), built with the `tokenizers` library the way
  its tokenizer.json is made (NFC, Qwen's split regex then byte-level, WordLevel with <|endoftext|> as unk) and
  laid out as its folder is (tokenizer_class Qwen2Tokenizer, the chat template in chat_template.j2), on a Qwen3;
- "tiny-llama3": the BPE with Llama-3.1's special tokens, BOS added by the post-processor, eos <|eot_id|> and a
  header-style chat template written here (BARC's induction model is a Llama-3.1-8B), on a Llama.
The models have random weights from a seed: they know nothing of ARC, but they have real architectures, so
generate, LoRA training and vLLM loading go through the real code paths.

Built once and cached in `$ARC_SUBMIT_CACHE/<style name>-<hash>` (default ~/.cache/arc_submit); the hash covers
the shape, the seed, the corpus and the style, so a changed recipe builds a new folder. Same seed: same weights.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import MappingProxyType

from .tokenizers import load_tokenizer

log = logging.getLogger(__name__)

RECIPE_VERSION = 1
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
# NVARC's turns follow each other with no newline between <|im_end|> and the next <|im_start|> (its chat_template.j2).
NVARC_CHAT_TEMPLATE = (
    "{%- for message in messages %}{{- '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' }}"
    "{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}")
LLAMA3_SPECIAL_TOKENS = ("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                         "<|eot_id|>")
# Llama-3.1's layout: BOS, then per message a role header, a blank line, the content trimmed, <|eot_id|>. Meta's own
# template also writes a dated system preamble; this one does not (the tests need the layout, not the dates).
LLAMA3_CHAT_TEMPLATE = (
    "{{- bos_token }}{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{%- endfor %}{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{%- endif %}")
# NVARC's 13 word entries; the three special tokens follow as 13, 14, 15. "\u010a" is how byte-level tokenizers
# write the newline byte ("Ċ"). NVARC kept only the tokens its data used: Qwen3's "\n\n" token was not one, so a
# blank line cannot be encoded.
NVARC_VOCAB = MappingProxyType({**{str(d): d for d in range(10)}, "\u010a": 10, "user": 11, "assistant": 12})
# The pre-tokenizer pattern of Qwen2/Qwen3 tokenizers, which NVARC's cut tokenizer kept: contractions, letters with
# one leading non-letter, single digits, punctuation runs, newline runs, other whitespace.
QWEN_SPLIT_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                      r"|\s*[\r\n]+|\s+(?!\S)|\s+")


@dataclass(frozen=True)
class TinyStyle:
    """What a tiny model imitates: its vocabulary, special tokens, chat template and architecture."""
    name: str  # what resolve_model takes, and the cache folder's prefix
    vocabulary: str  # "bpe": trained on _corpus() (TinyShape.vocab_size entries); "nvarc": NVARC_VOCAB (16)
    special_tokens: tuple[str, ...]  # ids right after the BPE's alphabet / the WordLevel entries, in this order
    eos_token: str
    pad_token: str | None  # None: as Llama-3.1, none (the engines then pad with EOS)
    bos_token: str | None  # given: the post-processor puts it first, as Llama-3's tokenizer.json does
    chat_template: str
    architecture: str = "llama"  # "llama" or "qwen3"
    extra_special_tokens: tuple[str, ...] = field(default=())  # tokenizer_config's additional_special_tokens
    colour_names: bool = False  # the BPE also learns grids written as colour names (BARC's), so they cut short


CHATML = TinyStyle("tiny", "bpe", SPECIAL_TOKENS, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token=None,
                   chat_template=CHAT_TEMPLATE)
NVARC = TinyStyle("tiny-nvarc", "nvarc", SPECIAL_TOKENS, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                  bos_token=None, chat_template=NVARC_CHAT_TEMPLATE, architecture="qwen3",
                  extra_special_tokens=("<|im_start|>", "<|im_end|>"))
LLAMA3 = TinyStyle("tiny-llama3", "bpe", LLAMA3_SPECIAL_TOKENS, eos_token="<|eot_id|>", pad_token=None,
                   bos_token="<|begin_of_text|>", chat_template=LLAMA3_CHAT_TEMPLATE, colour_names=True)
# BARC's names for the ten colours, in colour order; grids are rows of them separated by spaces.
COLOUR_NAMES = ("Black", "Blue", "Red", "Green", "Yellow", "Gray", "Pink", "Orange", "Purple", "Brown")
TINY_STYLES = MappingProxyType({style.name: style for style in (CHATML, NVARC, LLAMA3)})  # read-only: no module state


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


def build_tokenizer(vocab_size: int = 512, style: TinyStyle = CHATML):
    """A transformers fast tokenizer (PreTrainedTokenizerFast) of `style`, deterministic for a given corpus.
    `vocab_size` sizes a BPE; the NVARC vocabulary is always its 16 tokens."""
    from transformers import PreTrainedTokenizerFast

    extra = {"extra_special_tokens": list(style.extra_special_tokens)} if style.extra_special_tokens else {}
    fast = PreTrainedTokenizerFast(tokenizer_object=_backend(vocab_size, style), eos_token=style.eos_token,
                                   pad_token=style.pad_token, bos_token=style.bos_token, unk_token=None,
                                   clean_up_tokenization_spaces=False, **extra)
    fast.chat_template = style.chat_template
    return fast


def _backend(vocab_size: int, style: TinyStyle):
    """The `tokenizers.Tokenizer` (what tokenizer.json holds) of `style`."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    if style.vocabulary == "nvarc":
        tok = Tokenizer(models.WordLevel(vocab=dict(NVARC_VOCAB), unk_token=SPECIAL_TOKENS[0]))
        tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(QWEN_SPLIT_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)])
        tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
        tok.decoder = decoders.ByteLevel()
        tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in style.special_tokens])
        # The byte-level decoder's flags change nothing when decoding, and its Python constructor takes none; they
        # are set in the serialised form so tokenizer.json reads as NVARC's does.
        spec = json.loads(tok.to_str())
        spec["decoder"].update(add_prefix_space=False, trim_offsets=False, use_regex=False)
        return Tokenizer.from_str(json.dumps(spec))
    tok = _trained_bpe(vocab_size, style.special_tokens, style.colour_names)
    if style.bos_token:
        bos = (style.bos_token, tok.token_to_id(style.bos_token))
        tok.post_processor = processors.TemplateProcessing(single=f"{bos[0]} $A", pair=f"{bos[0]} $A {bos[0]} $B",
                                                           special_tokens=[bos])
    return tok


def _colour_corpus() -> list[str]:
    """Random grids in colour names: without them the BPE spells "Purple" in five tokens and a BARC prompt of a
    real task runs to thousands of tokens, slow on a CPU."""
    import numpy as np

    rng = np.random.default_rng(1)
    grids = ("\n".join(" ".join(COLOUR_NAMES[c] for c in row) for row in rng.integers(0, 10, size=(8, 8)))
             for _ in range(40))
    return [f"Here are the input and output grids:\n{g}\n" for g in grids]


def _trained_bpe(vocab_size: int, special_tokens: tuple[str, ...], colour_names: bool = False):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    # Digits split first: one token per cell, as the Qwen and Llama-3 tokenizers do.
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(special_tokens),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_corpus() + (_colour_corpus() if colour_names else []), trainer=trainer)
    return tok


def write_tokenizer(path: str | os.PathLike, vocab_size: int = 512, style: TinyStyle = CHATML) -> Path:
    """The tokenizer files of `style` in folder `path` (a folder holding only a tokenizer, as `--model` takes).

    NVARC's is written as its published folder is (tokenizer.json, tokenizer_config.json naming Qwen2Tokenizer,
    special_tokens_map.json, chat_template.j2), so loading it meets what loading the real one meets; the others as
    transformers saves them."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if style.vocabulary != "nvarc":
        build_tokenizer(vocab_size, style).save_pretrained(path)
        return path
    _backend(vocab_size, style).save(str(path / "tokenizer.json"))
    added = {str(len(NVARC_VOCAB) + k): dict(
        content=t, lstrip=False, normalized=False, rstrip=False, single_word=False, special=True)
        for k, t in enumerate(style.special_tokens)}
    config = dict(add_bos_token=False, add_prefix_space=False, added_tokens_decoder=added,
                  additional_special_tokens=list(style.extra_special_tokens), bos_token=None,
                  clean_up_tokenization_spaces=False, eos_token=style.eos_token, errors="replace",
                  model_max_length=262144, pad_token=style.pad_token, split_special_tokens=False,
                  tokenizer_class="Qwen2Tokenizer", unk_token=None)
    (path / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False))
    token_map = dict(additional_special_tokens=list(style.extra_special_tokens), eos_token=style.eos_token,
                     pad_token=style.pad_token)
    (path / "special_tokens_map.json").write_text(json.dumps(token_map, indent=2))
    (path / "chat_template.j2").write_text(style.chat_template)
    return path


def _recipe_hash(shape: TinyShape, seed: int, style: TinyStyle = CHATML) -> str:
    blob = {"v": RECIPE_VERSION, "shape": asdict(shape), "seed": seed, "corpus": _corpus(), "chat": CHAT_TEMPLATE}
    if style != CHATML:  # the default's hash (and so its cached folder) stays what it was before styles existed
        blob["style"] = asdict(style)
        blob["colour corpus"] = _colour_corpus() if style.colour_names else []
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:12]


def model_config(style: TinyStyle, shape: TinyShape, tokenizer):
    """The transformers config of a tiny model of `style` (its vocabulary: the tokenizer's)."""
    from transformers import LlamaConfig, Qwen3Config

    ids = dict(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
               bos_token_id=tokenizer.bos_token_id)
    common = dict(vocab_size=len(tokenizer), hidden_size=shape.hidden_size, intermediate_size=shape.intermediate_size,
                  num_hidden_layers=shape.num_hidden_layers, num_attention_heads=shape.num_attention_heads,
                  num_key_value_heads=shape.num_key_value_heads, max_position_embeddings=shape.max_position_embeddings,
                  tie_word_embeddings=True, torch_dtype="float32", **ids)
    if style.architecture == "qwen3":
        return Qwen3Config(head_dim=shape.hidden_size // shape.num_attention_heads,
                           rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, **common)
    if style.architecture != "llama":
        raise ValueError(f"tiny style {style.name}: architecture {style.architecture!r} is not one of llama, qwen3")
    return LlamaConfig(rope_theta=10000.0, **common)


def build_tiny_model(path: Path, shape: TinyShape = TinyShape(), seed: int = 0, style: TinyStyle = CHATML) -> Path:
    """Write tokenizer + random-weight model of `style` (safetensors, float32) to `path`."""
    import torch
    from transformers import AutoModelForCausalLM

    write_tokenizer(path, shape.vocab_size, style)
    tokenizer = load_tokenizer(path)  # the ids as an engine will see them
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(model_config(style, shape, tokenizer))
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(path, safe_serialization=True)
    return path


def tiny_model_path(shape: TinyShape = TinyShape(), seed: int = 0, cache_dir: str | os.PathLike | None = None,
                    style: TinyStyle = CHATML) -> Path:
    """The cached tiny model's folder, built on first use (a second or two). Safe with several processes:
    each builds in a temp folder and the first rename wins."""
    root = Path(cache_dir) if cache_dir else cache_root()
    path = root / f"{style.name}-{_recipe_hash(shape, seed, style)}"
    if (path / "config.json").exists():
        return path
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tiny-build-", dir=root))
    try:
        build_tiny_model(tmp, shape, seed, style)
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
    """A tiny style's name ('tiny', 'tiny-nvarc', 'tiny-llama3') -> its cached model folder; anything else is a
    local folder, checked to exist."""
    if model in TINY_STYLES:
        return str(tiny_model_path(cache_dir=cache_dir, style=TINY_STYLES[model]))
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
