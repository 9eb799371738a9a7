"""Reference builders: the prompt / answer / training texts of four published ARC models, written from an
independent reading of each author's public code (see AUTHOR_FORMATS.md for sources, lines and ambiguities).

These are test references, not the package's recipes: `arc_submit.llm.recipes` is compared against them.
Everything here is plain Python over plain lists (no numpy). A task is the Kaggle JSON dict
{"train": [{"input", "output"}, ...], "test": [{"input"}, ...]}; grids are lists of lists of ints 0..9.
The strings in quotes (system prompts, headers, preambles, separators) are the authors' verbatim text: the models
were trained on exactly these characters.

Identity view only: every author also augments (rotations, transposes, colour permutations, example shuffles)
and the ARChitects/NVARC drop leading examples when a task exceeds their token limit; none of that is done here.
"""

from __future__ import annotations

Grid = list  # list[list[int]]


def _rows(grid) -> list[list[int]]:
    return [[int(v) for v in row] for row in grid]


def _digits(grid, sep: str = "\n") -> str:
    """Rows of digits with no separator between cells, `sep` between rows, nothing after the last row."""
    return sep.join("".join(str(v) for v in row) for row in _rows(grid))


# ----------------------------------------------------------------------------------------------------------------
# NVARC (1ytic/NVARC, ARC-AGI1/002_ivan_arc1.ipynb, cell "arc_loader.py": convert_grid_to_string, QwenFormatter;
# cell "arc_solver.py": QwenDataCollatorForCompletionOnlyLM, ARC_VOCAB; tokenizer ARChitects/qwen3_configs/)
# ----------------------------------------------------------------------------------------------------------------

NVARC_IM_START = "<|im_start|>"
NVARC_IM_END = "<|im_end|>"  # also the tokenizer's eos_token
NVARC_PAD = "<|endoftext|>"  # pad_token, and the WordLevel model's unk_token
NVARC_USER_OPEN = "<|im_start|>user\n"
NVARC_ASSISTANT_OPEN = "<|im_start|>assistant\n"

# The 16-token vocabulary (tokenizer.json model.vocab + added_tokens): ids are the file's.
NVARC_VOCAB = {**{str(d): d for d in range(10)}, "\n": 10, "user": 11, "assistant": 12,
               "<|endoftext|>": 13, "<|im_start|>": 14, "<|im_end|>": 15}
NVARC_EOS_ID = 15
NVARC_PAD_ID = 13


def nvarc_grid(grid) -> str:
    """convert_grid_to_string: digit rows joined by a single "\\n", no trailing newline (it strips)."""
    return _digits(grid)


def _nvarc_turn_pair(inp, out) -> str:
    return NVARC_USER_OPEN + nvarc_grid(inp) + NVARC_IM_END + NVARC_ASSISTANT_OPEN + nvarc_grid(out) + NVARC_IM_END


def nvarc_prompt_text(task: dict, test_index: int = 0) -> str:
    """The literal text NVARC tokenises to decode one test input (ArcDataset.get(...)["input"] on the
    split_multi_replies key `<id>_<test_index>`): one user/assistant turn pair per train example, then the test
    input as a user turn and an open assistant turn. No BOS, no system turn, no newline between turns."""
    text = "".join(_nvarc_turn_pair(ex["input"], ex["output"]) for ex in task["train"])
    return text + NVARC_USER_OPEN + nvarc_grid(task["test"][test_index]["input"]) + NVARC_IM_END + NVARC_ASSISTANT_OPEN


def nvarc_answer(grid) -> str:
    """fmt_reply: what follows the prompt when the answer is `grid` (and what is scored): the grid + <|im_end|>."""
    return nvarc_grid(grid) + NVARC_IM_END


def nvarc_training_text(task: dict) -> str:
    """The test-time-training sequence: fmt_train(train, last_is_challenge=True) over the task's train examples
    (the TTT dataset has no replies, so ArcDataset.get falls back to it). The last example is written as
    fmt_query + fmt_reply, which is character-for-character the same turn pair, so this is simply every train
    example as a user/assistant turn pair."""
    return "".join(_nvarc_turn_pair(ex["input"], ex["output"]) for ex in task["train"])


def nvarc_trained_spans(task: dict) -> list[tuple[int, int]]:
    """Character spans [start, end) of nvarc_training_text(task) that carry loss, per the collator: in each
    assistant turn, the tokens after "assistant" "\\n" up to and including <|im_end|> (start+2, end+1 in token
    positions), i.e. every output grid plus its <|im_end|>. Nothing of the user turns, no <|im_start|>."""
    spans, pos = [], 0
    for ex in task["train"]:
        pos += len(NVARC_USER_OPEN + nvarc_grid(ex["input"]) + NVARC_IM_END + NVARC_ASSISTANT_OPEN)
        n = len(nvarc_grid(ex["output"]) + NVARC_IM_END)
        spans.append((pos, pos + n))
        pos += n
    return spans


def nvarc_ids(text: str) -> list[int]:
    """Token ids of `text` under NVARC's 16-token WordLevel tokenizer, by hand: the special strings are single
    tokens, and every other character is its own pre-token (digits split one by one; "\\n" alone is one; "user" and
    "assistant" are letter runs). Raises KeyError on anything the vocabulary lacks (e.g. "\\n\\n", which the
    pre-tokenizer keeps as ONE pre-token with no vocabulary entry -> unk <|endoftext|> in the real tokenizer)."""
    ids, i = [], 0
    specials = ("<|im_start|>", "<|im_end|>", "<|endoftext|>")
    while i < len(text):
        for s in specials:
            if text.startswith(s, i):
                ids.append(NVARC_VOCAB[s])
                i += len(s)
                break
        else:
            for word in ("assistant", "user"):
                if text.startswith(word, i):
                    ids.append(NVARC_VOCAB[word])
                    i += len(word)
                    break
            else:
                ch = text[i]
                if ch == "\n" and text[i + 1:i + 2] in ("\n", "\r"):
                    raise KeyError("\\n\\n: one pre-token, not in NVARC's vocabulary")
                ids.append(NVARC_VOCAB[ch])
                i += 1
    return ids


# ----------------------------------------------------------------------------------------------------------------
# The ARChitects 2024 (da-fr/arc-prize-2024, Apache-2.0; training_code/arc_loader.py fmt_array/fmt_input/
# fmt_output/fmt_train/fmt_task, fmt_opts in training_code/run_evaluation_Llama-rearc_with_ttt.py lines 50-57,
# training_code/model_tools.py InputMaskingDataCollator)
# ----------------------------------------------------------------------------------------------------------------

ARCHITECTS_PREPROMPT = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghjklmnpqrstuvwxyz"  # no I, O, i, o
ARCHITECTS_QUERY_BEG = "I"
ARCHITECTS_REPLY_BEG = "\n+/-=O"
ARCHITECTS_LINES_SEP = "\n"


def architects_grid(grid) -> str:
    """fmt_array: digit rows joined by lines_sep "\\n", nothing after the last row."""
    return _digits(grid, ARCHITECTS_LINES_SEP)


def _architects_input(grid) -> str:
    return ARCHITECTS_QUERY_BEG + architects_grid(grid) + ARCHITECTS_REPLY_BEG


def architects_answer(grid, eos: str) -> str:
    """fmt_output: the grid, "\\n", then the tokenizer's eos_token (reply_end = "\\n" + eos)."""
    return architects_grid(grid) + "\n" + eos


def _architects_train(task: dict, eos: str) -> str:
    return ARCHITECTS_PREPROMPT + "".join(_architects_input(ex["input"]) + architects_answer(ex["output"], eos)
                                          for ex in task["train"])


def architects_prompt_text(task: dict, test_index: int, eos: str) -> str:
    """fmt_task(key "<id>_<test_index>")["input"]: preprompt, every train example as
    I<input>\\n+/-=O<output>\\n<eos>, then I<test input>\\n+/-=O. The tokenizer adds its BOS in front when it
    tokenises this (tokenizer(prompt)); the BOS is not part of the text."""
    return _architects_train(task, eos) + _architects_input(task["test"][test_index]["input"])


def architects_training_text(task: dict, eos: str) -> str:
    """The TTT text: remove_test_data() leaves keys without a reply number, so fmt_task(...)["text"] is the train
    part only: preprompt + every train example with its output and "\\n" + eos."""
    return _architects_train(task, eos)


def architects_trained_spans(task: dict, eos: str) -> list[tuple[int, int]]:
    """Spans of architects_training_text carrying loss (trl DataCollatorForCompletionOnlyLM with
    instruction_template "I", response_template "\\n+/-=O", mask_first_n_examples=0 at TTT): everything after each
    "\\n+/-=O" up to the next "I", i.e. each output grid + "\\n" + eos. The preprompt and inputs carry none.
    (If the tokenizer's pad token equals eos, the base collator also masks the eos: see AUTHOR_FORMATS.md.)"""
    spans, pos = [], len(ARCHITECTS_PREPROMPT)
    for ex in task["train"]:
        pos += len(_architects_input(ex["input"]))
        n = len(architects_answer(ex["output"], eos))
        spans.append((pos, pos + n))
        pos += n
    return spans


# ----------------------------------------------------------------------------------------------------------------
# BARC induction (xu3kev/BARC finetune/alignment-handbook/gen_dataset_both.py: COLOR_MAPPING + COLOR_REPLACEMENTS
# lines 28-50, grid_to_input 167-172, make_problem_input_str 174-184, make_input_prompt_induction 190-194,
# DEFAULT_SYSTEM_PROMPT_IND 204, answer 323-327). arc25's test-time variant: ironbar/arc25 arc25/prompting.py.
# ----------------------------------------------------------------------------------------------------------------

BARC_COLOR_NAMES = ["Black", "Blue", "Red", "Green", "Yellow", "Gray", "Pink", "Orange", "Purple", "Brown"]

BARC_SYSTEM_PROMPT = ("You are a world-class puzzle solver with exceptional pattern recognition skills and expertise "
                      "in Python programming. Your task is to analyze puzzles and provide Python solutions.")

BARC_HEADER = ("Given input-output grid pairs as reference examples, carefully observe the patterns to predict the "
               "output grid for new test input. Each pair follows the same transformation rule. Grids are 2D arrays "
               "represented as strings, with cells (colors) separated by spaces and rows by newlines.")

BARC_INSTRUCTION = ("Write a Python function `transform` that can convert any given input grid to its corresponding "
                    "output grid based on the pattern observed in the reference examples.")

# The fixed start of every training answer (and arc25's `common_prefix`): the assistant prefill.
BARC_ANSWER_PREAMBLE = ("Let's solve this puzzle using Python code with the common library functions. We'll first "
                        "reason about the problem and then write the code to solve it. The `transform` function will "
                        "take the input grid and return the output grid. Here is the Python code with the comments "
                        "describing how to solve the problem:\n")


def barc_grid(grid) -> str:
    """Colour names separated by single spaces, rows by "\\n", and ONE trailing "\\n" (EXTRA_NEWLINE)."""
    return "\n".join(" ".join(BARC_COLOR_NAMES[v] for v in row) for row in _rows(grid)) + "\n"


def barc_induction_user(task: dict, test_index: int = 0) -> str:
    """The user message BARC trained on, with the one test input `test_index` (training problems always had
    exactly one test pair). Because every grid ends in "\\n", an example reads
    "Example k\\nInput:\\n<rows>\\n\\nOutput:\\n<rows>\\n\\n\\n"."""
    text = BARC_HEADER + "\nHere are the input and output grids for the reference examples:\n"
    for k, ex in enumerate(task["train"], start=1):
        text += f"Example {k}\nInput:\n{barc_grid(ex['input'])}\nOutput:\n{barc_grid(ex['output'])}\n\n"
    text += "Here is the input grid for the test example:\n"
    text += "Input:\n" + barc_grid(task["test"][test_index]["input"])
    return text + "\n" + BARC_INSTRUCTION


def barc_induction_messages(task: dict, test_index: int = 0) -> list[dict]:
    """[system, user, assistant-prefill]: the final message is the assistant prefill (role "assistant", content
    BARC_ANSWER_PREAMBLE, to be continued, not closed). Drop it for a plain generation prompt."""
    return [{"role": "system", "content": BARC_SYSTEM_PROMPT},
            {"role": "user", "content": barc_induction_user(task, test_index)},
            {"role": "assistant", "content": BARC_ANSWER_PREAMBLE}]


def barc_training_answer(code: str) -> str:
    """The full training answer for a program `code` (its `def main(` renamed `def transform(` by BARC, colour
    words Teal/Maroon/Grey renamed Purple/Brown/Gray): preamble, ```python block, closing fence + "\\n"."""
    return BARC_ANSWER_PREAMBLE + "```python\n" + code + "\n```\n"


def arc25_induction_user(task: dict, test_index: int = 0) -> str:
    """arc25's test-time user message for the same model (prompt_template_text rendered by jinja2, train samples
    NOT shuffled here; arc25 shuffles them and picks a random test input). It differs from BARC's training text:
    grids have no trailing newline (ColorNameEncoder), so examples are separated by "\\n\\n" where BARC has
    "\\n\\n\\n", and the test grid has no "Input:\\n" line before it."""
    colour = lambda g: "\n".join(" ".join(BARC_COLOR_NAMES[v] for v in row) for row in _rows(g))  # noqa: E731
    text = BARC_HEADER + "\nHere are the input and output grids for the reference examples:\n"
    for k, ex in enumerate(task["train"], start=1):
        text += f"Example {k}\nInput:\n{colour(ex['input'])}\n\nOutput:\n{colour(ex['output'])}\n\n"
    text += "\nHere is the input grid for the test example:\n" + colour(task["test"][test_index]["input"])
    return text + "\n\n" + BARC_INSTRUCTION


def barc_python_block(response: str) -> str | None:
    """The code of the first ```python block of a full answer (preamble + continuation), or None."""
    if "```python" not in response:
        return None
    rest = response.split("```python", 1)[1]
    if "```" not in rest:
        return None
    return rest.split("```", 1)[0].strip()


# ----------------------------------------------------------------------------------------------------------------
# arc24 (ironbar/arc24 scripts/arc24/encoders.py GridShapeEncoder(RowNumberEncoder(MinimalGridEncoder())) — the
# default of scripts/inference.py and scripts/fine-tuning.py; scripts/arc24/prompting.py create_prompts_from_task,
# 'output-from-examples-v0' = system_prompt_v0 + prompt_template_v0 + answer_template_v0, remove_assistant_ending,
# parse_grid_from_response)
# ----------------------------------------------------------------------------------------------------------------

# Note the trailing spaces on the first three lines and the final newline: verbatim.
ARC24_SYSTEM_PROMPT = (
    "You are a helpful AI assistant. Your job is to solve tasks from the Abstraction and Reasoning Challenge (ARC). \n"
    "The user will present you with sample input and output grids for each task. \n"
    "Your job will be to understand the transformation between the input and the output and apply it to the last "
    "input grid given by the user. \n"
    "The puzzle-like inputs and outputs present a grid where each square can be one of ten colors. A grid can be any "
    "height or width between 1x1 and 30x30.\n"
    "The background of the grid is typically colored with 0.\n"
    "The tasks from ARC are based on the following priors:\n"
    "\n"
    "- Objectness: Objects persist and cannot appear or disappear without reason. Objects can interact or not "
    "depending on the circumstances.\n"
    "- Goal-directed: Objects can be animate or inanimate. Some objects are \"agents\" - they have intentions and "
    "they pursue goals.\n"
    "- Numbers & counting: Objects can be counted or sorted by their shape, appearance, or movement using basic "
    "mathematics like addition, subtraction, and comparison.\n"
    "- Basic geometry & topology: Objects can be shapes like rectangles, triangles, and circles which can be "
    "mirrored, rotated, translated, deformed, combined, repeated, etc. Differences in distances can be detected.\n"
    "\n"
    "The transformations between input and output should be based on these priors.\n"
)

ARC24_USER_HEADER = ("Let's see if you can solve this simple ARC task. These are some input-output grid examples "
                     "that define the task.")
ARC24_PREFILL = "### Output\n\n```grid"


def arc24_grid(grid) -> str:
    """```grid shape: HxW (rows x columns), then each row as "<1-based row number> <digits>", then ```."""
    rows = _rows(grid)
    body = "\n".join(f"{k} " + "".join(str(v) for v in row) for k, row in enumerate(rows, start=1))
    return f"```grid shape: {len(rows)}x{len(rows[0])}\n{body}\n```"


def arc24_user(task: dict, test_index: int = 0) -> str:
    """prompt_template_v0 as jinja2 renders it (defaults: the text's single final newline is dropped, the newline
    after each {% for %}/{% endfor %} tag is kept)."""
    text = ARC24_USER_HEADER + "\n"
    for k, ex in enumerate(task["train"], start=1):
        text += (f"\n## Example {k}\n\n### Input\n\n{arc24_grid(ex['input'])}\n\n"
                 f"### Output\n\n{arc24_grid(ex['output'])}\n")
    return text + "\n## Test case\n\n### Input\n\n" + arc24_grid(task["test"][test_index]["input"])


def arc24_messages(task: dict, test_index: int = 0) -> list[dict]:
    """[system, user, assistant-prefill]: one prompt per test input; the final assistant message is the prefill
    "### Output\\n\\n```grid" (answer_template_v0 with output "```grid"), left open: arc24 renders the chat with
    add_generation_prompt=False and cuts at the last end-of-turn token (remove_assistant_ending)."""
    return [{"role": "system", "content": ARC24_SYSTEM_PROMPT},
            {"role": "user", "content": arc24_user(task, test_index)},
            {"role": "assistant", "content": ARC24_PREFILL}]


def arc24_answer(grid) -> str:
    """The assistant message arc24 trains on for output `grid` (answer_template_v0 with the encoded grid):
    "### Output\\n\\n```grid shape: HxW\\n1 ...\\n```". The model then ends its turn (<|im_end|> under Qwen)."""
    return "### Output\n\n" + arc24_grid(grid)


def arc24_continuation(grid) -> str:
    """What the model must write after the prefill for `grid`: arc24_answer(grid) minus ARC24_PREFILL,
    i.e. " shape: HxW\\n1 ...\\n```"."""
    return arc24_answer(grid)[len(ARC24_PREFILL):]


def arc24_parse(continuation: str):
    """parse_grid_from_response: prepend "```grid", take the lines after "```grid shape:" up to the next line
    starting with ```, drop each row's number (text up to the first space), read the digits. Raises on garbage."""
    lines, inside = [], False
    for line in ("```grid" + continuation).splitlines():
        if line.startswith("```grid shape:"):
            inside = True
        elif inside:
            if line.startswith("```"):
                break
            lines.append(line.split(" ", 1)[1])
    grid = [[int(c) for c in line] for line in "\n".join(lines).strip().splitlines()]
    if not grid:
        raise ValueError("no grid in the continuation")
    return grid


# ----------------------------------------------------------------------------------------------------------------
# Chat templates of the base models, rendered by hand (for the `text` the engine tokenises).
# ----------------------------------------------------------------------------------------------------------------

def qwen25_chat_text(messages: list[dict], open_last: bool = True) -> str:
    """Qwen2.5-Instruct's template (the arc24 base model) with the messages given: each as
    <|im_start|>role\\ncontent<|im_end|>\\n (content not trimmed). With open_last the text is cut at the last
    <|im_end|> (arc24's remove_assistant_ending), so it ends with the assistant prefill."""
    text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return text[:text.rindex("<|im_end|>")] if open_last else text


def llama31_chat_text(messages: list[dict], continue_final: bool = True, date: str = "26 Jul 2024") -> str:
    """Llama-3.1-Instruct's template as BARC's recipes set it (bos, system header with the knowledge/today dates,
    every content `| trim`med, <|eot_id|> after each). With continue_final the final (assistant) message is left
    open the way transformers' continue_final_message does it: because the template trims, the prefill's final
    "\\n" is lost (text ends "...solve the problem:"). BARC trained on "...problem:\\n```python" (see notes)."""
    system = messages[0]["content"].strip() if messages[0]["role"] == "system" else ""
    rest = messages[1:] if messages[0]["role"] == "system" else messages
    text = ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
            f"Cutting Knowledge Date: December 2023\nToday Date: {date}\n\n{system}<|eot_id|>")
    for m in rest:
        text += f"<|start_header_id|>{m['role']}<|end_header_id|>\n\n{m['content'].strip()}<|eot_id|>"
    if continue_final:
        text = text[:-len("<|eot_id|>")]
    return text
