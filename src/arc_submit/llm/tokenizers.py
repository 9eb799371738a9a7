"""Tokenizers that keep the ids their files give, and a check of what text survives tokenisation.

Why this module: under transformers 5.x `AutoTokenizer` builds the class tokenizer_config.json names and lets that
class rebuild the backend from the vocabulary. For NVARC's 16-token Qwen3 vocabulary (a WordLevel model:
digits, one newline token, `user`, `assistant`, three special tokens) `Qwen2Tokenizer` made a BPE without
merges, which drops `user` and `assistant` without a word and encodes "\\n\\n" as two newline tokens where the
file has no entry for it. The model was trained on the file's ids, so every prompt it got was text it never saw.
`load_tokenizer` builds such a tokenizer straight from tokenizer.json instead, with the special tokens and
chat template of the files beside it.

    tokenizer = load_tokenizer("/kaggle/input/models/.../1")   # a model folder or a folder of tokenizer files
    round_trip_problems(tokenizer, prompt)                      # [] when the prompt survives tokenisation
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

log = logging.getLogger(__name__)

CHAT_TEMPLATE_FILES = ("chat_template.jinja", "chat_template.j2")  # transformers 5 reads only the first
NAMED_SPECIAL_TOKENS = ("bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token", "mask_token")
MOST_PROBLEMS = 10  # fragments listed per text; a prompt with hundreds of bad fragments needs only the first few


# --- loading ---------------------------------------------------------------------------------------------------


def load_tokenizer(path):
    """The tokenizer of a model folder (or a folder holding only tokenizer files), as a transformers fast
    tokenizer whose ids are exactly tokenizer.json's.

    AutoTokenizer's tokenizer is kept when its vocabulary and its encoding of a probe (the file's own vocabulary,
    decoded and concatenated, and ARC-like text) agree with tokenizer.json; for a WordLevel model, or when they
    disagree, the tokenizer is built from tokenizer.json itself with the special tokens of tokenizer_config.json
    (special_tokens_map.json for what that lacks). Either way the chat template is tokenizer_config.json's
    `chat_template`, or else a chat_template.jinja / chat_template.j2 file in the folder.

    Raises FileNotFoundError naming the folder when it or its tokenizer files are missing, ValueError when a special
    token the config names is not in tokenizer.json (transformers would add it under an id the model has no row for).
    """
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"tokenizer folder {folder}: no such folder; give a model folder or a folder holding "
                                f"its tokenizer files (tokenizer.json, tokenizer_config.json)")
    spec_file = folder / "tokenizer.json"
    if not spec_file.is_file():
        if not any((folder / n).is_file() for n in ("tokenizer_config.json", "tokenizer.model", "vocab.json")):
            held = ", ".join(sorted(p.name for p in folder.iterdir())[:8]) or "nothing"
            raise FileNotFoundError(f"tokenizer folder {folder}: no tokenizer.json, tokenizer_config.json or "
                                    f"tokenizer.model (it holds {held}); copy the model's tokenizer files into it")
        # No tokenizer.json: only transformers can build this tokenizer (sentencepiece, vocab + merges), and there
        # are no file ids to hold it to.
        from transformers import AutoTokenizer

        return _with_chat_template(AutoTokenizer.from_pretrained(str(folder)), folder)
    spec = _read_json(spec_file)
    model_type = (spec.get("model") or {}).get("type")
    if model_type != "WordLevel":
        from tokenizers import Tokenizer
        from transformers import AutoTokenizer

        try:
            auto = AutoTokenizer.from_pretrained(str(folder))
        except Exception as e:  # an unknown tokenizer_class, a missing slow-tokenizer dependency: the file still works
            log.warning("tokenizer %s: AutoTokenizer cannot load it (%s: %s); building it from tokenizer.json",
                        folder, type(e).__name__, e)
        else:
            difference = ids_difference(auto, Tokenizer.from_file(str(spec_file)))
            if difference is None:
                return _with_chat_template(auto, folder)
            log.warning("tokenizer %s: AutoTokenizer (%s) does not give tokenizer.json's ids (%s); building it from "
                        "tokenizer.json", folder, type(auto).__name__, difference)
    return tokenizer_from_file(folder)


def tokenizer_from_file(folder):
    """A PreTrainedTokenizerFast on tokenizer.json as it is, with the special tokens and chat template of the
    files beside it; refuses any special token tokenizer.json lacks, so no id is added or moved."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    folder = Path(folder)
    spec_file = folder / "tokenizer.json"
    config = _read_json(folder / "tokenizer_config.json") if (folder / "tokenizer_config.json").is_file() else {}
    token_map = (_read_json(folder / "special_tokens_map.json")
                 if (folder / "special_tokens_map.json").is_file() else {})
    vocab = Tokenizer.from_file(str(spec_file)).get_vocab(with_added_tokens=True)

    def named(key):
        source = config if key in config else token_map
        return _token_text(source.get(key)), ("tokenizer_config.json" if source is config else "special_tokens_map.json")

    kwargs = {}
    for key in NAMED_SPECIAL_TOKENS:
        text, source = named(key)
        if text is not None:
            _require_in_vocab(folder, vocab, key, text, source)
        kwargs[key] = text
    extra, source = _extra_special_tokens(config, token_map)
    for text in extra:
        _require_in_vocab(folder, vocab, "additional_special_tokens", text, source)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_file=str(spec_file), name_or_path=str(folder), extra_special_tokens=extra,
        # transformers' default would tidy spaces around punctuation on decode: text the model never wrote
        clean_up_tokenization_spaces=bool(config.get("clean_up_tokenization_spaces", False)),
        **{k: config[k] for k in ("model_max_length", "padding_side", "truncation_side") if k in config},
        **kwargs)
    # add_bos_token / add_eos_token are not passed on purpose: transformers would then replace tokenizer.json's
    # post-processor, and the file's post-processor is what says which special tokens an encoding gets.
    if tokenizer.get_vocab() != vocab:
        added = sorted(set(tokenizer.get_vocab()) - set(vocab))
        raise RuntimeError(f"tokenizer {folder}: transformers changed tokenizer.json's vocabulary while loading it "
                           f"(added {added[:5]}); the ids would not be the model's")
    return _with_chat_template(tokenizer, folder, config)


def chat_template_of(folder, config: dict | None = None) -> str | None:
    """tokenizer_config.json's chat_template (its "default" when it holds several), else a template file."""
    folder = Path(folder)
    if config is None:
        config = _read_json(folder / "tokenizer_config.json") if (folder / "tokenizer_config.json").is_file() else {}
    template = config.get("chat_template")
    if isinstance(template, list):  # [{"name": ..., "template": ...}]: the one named default, else the first
        chosen = next((t for t in template if t.get("name") == "default"), template[0] if template else None)
        template = chosen.get("template") if chosen else None
    if template:
        return template
    for name in CHAT_TEMPLATE_FILES:
        if (folder / name).is_file():
            return (folder / name).read_text(encoding="utf-8")
    return None


def ids_difference(tokenizer, reference) -> str | None:
    """Where a transformers tokenizer's ids differ from a `tokenizers.Tokenizer` (tokenizer.json as it is), or None.

    Compared: the vocabulary (added tokens included) and the encoding, without special tokens, of ARC-like text and
    of the reference's own vocabulary decoded back to text (every token of a small vocabulary, a spread of a large
    one, in runs of 64 so tokens meet their neighbours as in real text)."""
    got, want = tokenizer.get_vocab(), reference.get_vocab(with_added_tokens=True)
    moved = sorted(t for t in want if got.get(t) != want[t])
    if moved:
        return f"{len(moved)} of the file's tokens are missing or have other ids, e.g. {moved[:3]}"
    # Tokens transformers appended (a special token only tokenizer_config.json names) leave the file's ids as they
    # are; one that took an id of the file's would not.
    taken = set(want.values())
    clashing = sorted(t for t in got if t not in want and got[t] in taken)
    if clashing:
        return f"tokens not in the file took ids of its own, e.g. {clashing[:3]}"
    for text in _probe_texts(reference):
        try:
            wanted = reference.encode(text, add_special_tokens=False).ids
        except Exception:  # the file itself cannot encode this text: nothing to compare it with
            continue
        try:
            have = tokenizer(text, add_special_tokens=False)["input_ids"]
        except Exception as e:
            return f"{_clip(text)}: the file encodes it, this tokenizer raises {type(e).__name__}: {e}"
        if have != wanted:
            return f"{_clip(text)}: the file gives {wanted[:16]}, this tokenizer {have[:16]}"
    return None


def _probe_texts(reference) -> list[str]:
    texts = ["user\n0123456789\n\n", "assistant\n", " Black Blue Red Green Yellow Gray Pink Orange Purple Brown\n",
             "def transform(grid):\n    return [row[::-1] for row in grid]  # mirror\n", "Input:\n1 2\n3 4\nOutput:"]
    added = set(reference.get_added_tokens_decoder())  # their ids: compared through the vocabulary already
    ids = [i for i in range(reference.get_vocab_size(with_added_tokens=True))
           if i not in added and reference.id_to_token(i) is not None]
    step = max(1, len(ids) // 4096)
    pieces = [reference.decode([i], skip_special_tokens=False) for i in ids[::step]]
    texts += ["".join(pieces[k:k + 64]) for k in range(0, len(pieces), 64)]
    return [t for t in texts if t]


def _with_chat_template(tokenizer, folder: Path, config: dict | None = None):
    if not getattr(tokenizer, "chat_template", None):
        template = chat_template_of(folder, config)
        if template:
            tokenizer.chat_template = template
    return tokenizer


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"tokenizer file {path}: cannot be read as JSON ({e}); copy it again from the model") from e


def _token_text(value) -> str | None:
    """A special token as the files write it: a string, an AddedToken dict ({"content": ...}) or null."""
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def _extra_special_tokens(config: dict, token_map: dict) -> tuple[list[str], str]:
    """additional_special_tokens (transformers 4) or extra_special_tokens (5: a list, or a dict of named ones)."""
    for source, name in ((config, "tokenizer_config.json"), (token_map, "special_tokens_map.json")):
        for key in ("additional_special_tokens", "extra_special_tokens"):
            value = source.get(key)
            if isinstance(value, dict):
                value = list(value.values())
            if value:
                return [t for t in (_token_text(v) for v in value) if t is not None], name
    return [], "tokenizer_config.json"


def _require_in_vocab(folder: Path, vocab: dict, key: str, text: str, source: str) -> None:
    if text not in vocab:
        raise ValueError(f"tokenizer {folder}: {source} names {key} {text!r}, which tokenizer.json does not have; "
                         f"transformers would add it as id {len(vocab)}, a row the model lacks. Name a token of "
                         f"tokenizer.json there, or remove the entry")


# --- round trips -----------------------------------------------------------------------------------------------


def round_trip_problems(tokenizer, text: str) -> list[str]:
    """What of `text` does not survive `tokenizer`, one readable line each; [] when it all does.

    Checked, without adding special tokens: encoding does not raise; no id is the unknown token; decoding the ids
    gives `text` back. Each fragment the vocabulary cannot hold (a pre-token with no entry, one that becomes the
    unknown token, one that encodes to nothing) is named with where it first occurs and how often."""
    problems = []
    fragments = _fragment_problems(tokenizer, text)
    try:
        encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=bool(tokenizer.is_fast))
    except Exception as e:
        problems.append(f"encoding raises {type(e).__name__}: {e}")
        return problems + (fragments or ["(no single fragment found to blame)"])
    ids = list(encoding["input_ids"])
    unk_ids = _unknown_ids(tokenizer)
    if unk_ids and not fragments and any(i in unk_ids for i in ids):  # a slow tokenizer: found here, not above
        offsets = encoding.get("offset_mapping")
        where = [j for j, i in enumerate(ids) if i in unk_ids]
        first = (f" at character {offsets[where[0]][0]}" if offsets else "")
        problems.append(f"{len(where)} token(s) are the unknown token{first}")
    problems += fragments
    decoded = tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    if decoded != text:
        i = next((k for k, (a, b) in enumerate(zip(text, decoded)) if a != b), min(len(text), len(decoded)))
        problems.append(f"decode(encode(text)) differs from the text at character {i} ({_line_col(text, i)}): the "
                        f"text has {text[max(0, i - 12):i + 24]!r}, the decoding {decoded[max(0, i - 12):i + 24]!r} "
                        f"({len(text)} vs {len(decoded)} characters)")
    return problems


def _fragment_problems(tokenizer, text: str) -> list[str]:
    """Pre-tokens the model part of a fast tokenizer cannot encode, grouped by fragment, in order of first place."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return []
    unk_ids = _unknown_ids(tokenizer)
    found: dict[tuple[str, str], list[int]] = {}
    for start, segment in _plain_segments(tokenizer, text):
        normalized = backend.normalizer.normalize_str(segment) if backend.normalizer else segment
        # Offsets map back to the text only where normalising kept the length (NFC on ARC text always does).
        same = len(normalized) == len(segment)
        pieces = (backend.pre_tokenizer.pre_tokenize_str(normalized) if backend.pre_tokenizer
                  else [(normalized, (0, len(normalized)))])
        for piece, (a, b) in pieces:
            try:
                tokens = backend.model.tokenize(piece)
            except Exception:
                reason = "has no entry in the vocabulary, and encoding it raises (no usable unknown token)"
            else:
                if not tokens:
                    reason = "is lost: it encodes to no token at all"
                elif any(t.id in unk_ids for t in tokens):
                    reason = "becomes the unknown token"
                else:
                    continue
            fragment = normalized[a:b]
            found.setdefault((fragment, reason), []).append(start + (a if same else 0))
    lines = []
    for (fragment, reason), places in sorted(found.items(), key=lambda kv: kv[1][0]):
        again = f", and {len(places) - 1} more time(s)" if len(places) > 1 else ""
        lines.append(f"{fragment!r} at character {places[0]} ({_line_col(text, places[0])}){again}: {reason}")
    if len(lines) > MOST_PROBLEMS:
        lines = lines[:MOST_PROBLEMS] + [f"... and {len(lines) - MOST_PROBLEMS} other fragments"]
    return lines


def _plain_segments(tokenizer, text: str) -> list[tuple[int, str]]:
    """(offset, text) of the stretches between added tokens (those are matched whole, never pre-tokenised)."""
    added = sorted((t for t in tokenizer.get_added_vocab() if t), key=len, reverse=True)
    if not added:
        return [(0, text)]
    segments, at = [], 0
    for m in re.finditer("|".join(re.escape(t) for t in added), text):
        if m.start() > at:
            segments.append((at, text[at:m.start()]))
        at = m.end()
    if at < len(text):
        segments.append((at, text[at:]))
    return segments


def _unknown_ids(tokenizer) -> set[int]:
    ids = {tokenizer.unk_token_id} if getattr(tokenizer, "unk_token_id", None) is not None else set()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    unk = getattr(backend.model, "unk_token", None) if backend is not None else None
    if unk and backend.token_to_id(unk) is not None:
        ids.add(backend.token_to_id(unk))
    return ids


def _line_col(text: str, i: int) -> str:
    line = text.count("\n", 0, i) + 1
    return f"line {line}, column {i - (text.rfind(chr(10), 0, i) + 1) + 1}"


def _clip(text: str, width: int = 60) -> str:
    return repr(text if len(text) <= width else text[:width] + "...")
