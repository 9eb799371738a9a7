"""Recipes: everything the authors of a published ARC model fixed about the text it reads and writes, as data.

A model fine-tuned elsewhere scores near zero when fed other text than it was trained on, so a recipe holds it all:
- the grid encoding (`GridText`: digits or colour names, row numbers, a shape header, composable);
- per solver kind, a `Layout`: system prompt, instruction, how a solved example and the test input are written,
  one chat turn per example or one user message for the whole task, the assistant prefill the answer starts
  with, the answer's shape and what follows it before the end-of-sequence token, test inputs per prompt;
- how turns become text (`chat`): the model's own chat template, a literal turn format the authors wrote out by
  hand (NVARC), or plain text with no roles (the ARChitects);
- the test-time-training layout (leave-one-out pairs, or the whole task as one sequence with loss on every
  output) and the LoRA the authors trained (rank, alpha, rsLoRA, target modules, learning rate).

Each preset names its source. A user's own recipe is a dict of these fields (with an optional "preset" to start
from; "transduction"/"induction"/"lora" are dicts of their own fields) or "module:attribute" naming a Recipe.
Rendering lives in `prompts.py`; this module is only the data and its checks.
"""

from __future__ import annotations

import importlib
import string
from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType
from typing import Literal

from .engine import LLAMA_LINEAR_MODULES
from .grid_text import GridText, grid_text

EOS = "{eos}"  # in a plain-text template: the tokenizer's end-of-sequence token, as text
EMBEDDING_MODULES = ("embed_tokens", "lm_head")

TRANSDUCTION_INSTRUCTION = ("Find the rule that maps each input grid to its output grid in the examples, "
                            "then apply it to the test input and write the test output grid.")
INDUCTION_INSTRUCTION = ("Write a Python function `transform(grid)` that maps each input grid to its output "
                         "grid in the examples. A grid is a list of rows; each row is a list of integers 0-9. "
                         "Answer with one ```python code block.")


@dataclass(frozen=True)
class Layout:
    """How one kind of prompt is written. Templates use {n} (1-based number of the example, or of the test input
    among those the prompt shows), {input}, {output} (grids as the recipe's GridText writes them) and, in `answer`,
    {answer} (the grid, or the program's code)."""
    turns: Literal["single", "per_example"] = "single"  # per_example: a user turn per input, an assistant turn per output
    system: str | None = None  # the system message, where the chat has roles
    instruction: str = ""  # before the examples
    example: str = "Example {n}\ninput:\n{input}\noutput:\n{output}"  # a solved example (single turns)
    separator: str = "\n\n"  # between the non-empty parts: instruction, each example, each query, closing
    query: str = "Test\ninput:\n{input}\noutput:\n"  # a test input (per_example: the content of each user turn)
    closing: str = ""  # after the test input(s)
    prefill: str = ""  # what the assistant's answer starts with; written into the prompt
    answer: str = "{answer}"  # the assistant's whole answer (it starts with `prefill`)
    answer_suffix: str = ""  # after the answer, before the end-of-sequence token
    tests_per_prompt: int | None = None  # induction: test inputs shown per prompt; None: all of them
    max_tokens: int | None = None  # the answer length the authors allowed (induction); None: the solver decides

    def __post_init__(self):
        if self.turns not in ("single", "per_example"):
            raise ValueError(f"layout: turns {self.turns!r}; use single or per_example")
        for name in ("instruction", "example", "query", "closing", "prefill", "answer_suffix"):
            _check_placeholders(f"layout {name}", getattr(self, name), {"n", "input", "output", "eos"})
        _check_placeholders("layout answer", self.answer, {"answer", "eos"})
        if "{answer}" not in self.answer:
            raise ValueError(f"layout: answer {self.answer!r} must contain {{answer}} (where the grid or code goes)")
        if self.turns == "per_example" and (self.instruction or self.closing):
            raise ValueError("layout: per_example turns have no instruction or closing (each turn is one grid); "
                             "leave them empty, or use single turns")
        if self.tests_per_prompt is not None and self.tests_per_prompt < 1:
            raise ValueError(f"layout: tests_per_prompt must be at least 1 or null, got {self.tests_per_prompt}")


@dataclass(frozen=True)
class LoraRecipe:
    """The test-time LoRA the authors trained; a solver's own lora_* options override each field."""
    rank: int | None = None
    alpha: int | None = None
    use_rslora: bool | None = None  # scale alpha / sqrt(rank) (rsLoRA) instead of alpha / rank
    target_modules: tuple[str, ...] | None = None
    learning_rate: float | None = None


@dataclass(frozen=True)
class Recipe:
    name: str = "custom"
    source: str = ""  # where the format was read (repository and file)
    grid: GridText = field(default_factory=GridText)
    transduction: Layout | None = None
    induction: Layout | None = None
    # auto: the tokenizer's chat template when it has one, else the plain user text (our own layouts);
    # template: the tokenizer's chat template, required; turns: `turn` below, as the authors wrote the tokens out;
    # plain: no roles, the layout's text is the prompt.
    chat: Literal["auto", "template", "turns", "plain"] = "auto"
    turn: str = ""  # chat "turns": one message, with {role} and {content}
    generation_prompt: str = ""  # chat "turns": what opens the assistant's turn in a prompt
    ttt_layout: Literal["leave_one_out", "full_sequence"] = "leave_one_out"
    lora: LoraRecipe = field(default_factory=LoraRecipe)

    def __post_init__(self):
        if self.chat not in ("auto", "template", "turns", "plain"):
            raise ValueError(f"recipe {self.name}: chat {self.chat!r}; use auto, template, turns or plain")
        if self.ttt_layout not in ("leave_one_out", "full_sequence"):
            raise ValueError(f"recipe {self.name}: ttt_layout {self.ttt_layout!r}; use leave_one_out or full_sequence")
        if self.chat == "turns":
            _check_placeholders(f"recipe {self.name}: turn", self.turn, {"role", "content"})
            if self.turn.count("{content}") != 1 or "{role}" not in self.turn:
                raise ValueError(f"recipe {self.name}: chat turns needs `turn` with {{role}} and one {{content}}, "
                                 f"got {self.turn!r}")
        samples = {"transduction": self.grid.encode([[0]]), "induction": "def transform(grid):\n    return grid"}
        for kind, layout in (("transduction", self.transduction), ("induction", self.induction)):
            if layout is None:
                continue
            if not layout.answer.format(answer=samples[kind], eos="").startswith(layout.prefill):
                raise ValueError(f"recipe {self.name}: the {kind} answer {layout.answer!r} (with the grid or code in "
                                 f"it) must start with the prefill {layout.prefill!r}: the model continues from it")
            if self.chat == "plain" and (layout.turns == "per_example" or layout.system):
                raise ValueError(f"recipe {self.name}: a plain-text recipe has no roles: its {kind} layout can have "
                                 f"no system message and no per-example turns; use chat template or turns")
            if self.chat != "plain" and EOS in (layout.example + layout.query + layout.instruction + layout.closing
                                                + layout.answer_suffix + layout.answer):
                raise ValueError(f"recipe {self.name}: {{eos}} in a {kind} template only means something in a plain "
                                 f"recipe (chat turns end with the template's own end-of-turn)")
        if self.ttt_layout == "full_sequence" and self.transduction is not None:
            if self.chat != "plain" and self.transduction.turns != "per_example":
                raise ValueError(f"recipe {self.name}: ttt_layout full_sequence trains on every output of a task in "
                                 f"one sequence, so each output must be its own span: use transduction turns "
                                 f"per_example, or chat plain")

    def layout(self, kind: str) -> Layout:
        """The layout of a solver kind ("transduction" / "induction"), or an error naming the recipes that have one."""
        layout = getattr(self, kind)
        if layout is None:
            having = [n for n, r in RECIPES.items() if getattr(r, kind) is not None]
            raise ValueError(f"recipe {self.name} has no {kind} layout (its model was not trained for {kind}); "
                             f"use a recipe that has one ({', '.join(having)}) or give its `{kind}` fields")
        return layout


def _check_placeholders(what: str, text: str, allowed: set[str]) -> None:
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}
    except ValueError as e:
        raise ValueError(f"{what} {text!r}: {e} (write a literal brace as {{{{ or }}}})") from None
    unknown = sorted(names - allowed)
    if unknown:
        raise ValueError(f"{what} {text!r} uses unknown placeholder(s) {', '.join(unknown)}; "
                         f"use {', '.join('{' + a + '}' for a in sorted(allowed))}")


# --- the presets ----------------------------------------------------------------------------------------------

_OURS = Recipe(
    name="arc-submit", source="this package's own layout (the tiny model and models you fine-tune with it)",
    transduction=Layout(instruction=TRANSDUCTION_INSTRUCTION, answer_suffix="\n\n"),
    induction=Layout(instruction=INDUCTION_INSTRUCTION, query="Test input {n}:\n{input}",
                     answer="```python\n{answer}\n```\n"),
)

# NVARC, ARC Prize 2025 1st (1ytic/NVARC, ARC-AGI1/002_ivan_arc1.ipynb: QwenFormatter, its data collator and
# worker(); tokenizer files ARChitects/qwen3_configs/). Qwen3-4B with a 16-token vocabulary; the turns are written
# out token by token with no newline between them (its own chat_template.j2 renders the same), no system message.
# Test-time training: the task's train examples as one sequence (fmt_train with last_is_challenge), loss on every
# assistant output and its <|im_end|>; LoRA rank 256, alpha 32, rsLoRA, embeddings and LM head included, lr 5e-5.
NVARC = Recipe(
    name="nvarc", source="1ytic/NVARC ARC-AGI1/002_ivan_arc1.ipynb (QwenFormatter), ARChitects/qwen3_configs/",
    chat="turns", turn="<|im_start|>{role}\n{content}<|im_end|>", generation_prompt="<|im_start|>assistant\n",
    transduction=Layout(turns="per_example", query="{input}", separator=""),
    ttt_layout="full_sequence",
    lora=LoraRecipe(rank=256, alpha=32, use_rslora=True, target_modules=LLAMA_LINEAR_MODULES + EMBEDDING_MODULES,
                    learning_rate=5e-5),
)

# The ARChitects, ARC Prize 2024 1st (da-fr/arc-prize-2024, Apache-2.0: training_code/arc_loader.py fmt_* and
# the fmt_opts of run_evaluation_Llama-rearc_with_ttt.py). Plain text: a fixed pre-prompt of letters, then per
# example "I" + input + "\n+/-=O" + output + "\n" + EOS; the tokenizer adds its BOS. Test-time training on the
# train examples as one text (loss on every output and its "\n" + EOS); LoRA rank 64, alpha 16, rsLoRA,
# embeddings and LM head included, lr 1e-4.
ARCHITECTS_2024 = Recipe(
    name="architects-2024", source="da-fr/arc-prize-2024 training_code/arc_loader.py, run_evaluation_*.py fmt_opts",
    chat="plain",
    transduction=Layout(instruction="ABCDEFGHJKLMNPQRSTUVWXYZabcdefghjklmnpqrstuvwxyz",
                        example="I{input}\n+/-=O{output}\n{eos}", separator="", query="I{input}\n+/-=O",
                        answer_suffix="\n"),
    ttt_layout="full_sequence",
    lora=LoraRecipe(rank=64, alpha=16, use_rslora=True, target_modules=LLAMA_LINEAR_MODULES + EMBEDDING_MODULES,
                    learning_rate=1e-4),
)

# BARC's induction model, barc0/Llama-3.1-ARC-Potpourri-Induction-8B (xu3kev/BARC
# finetune/alignment-handbook/gen_dataset_both.py: the system prompt, make_input_prompt_induction, the answer's
# preamble; ironbar/arc25 arc25/prompting.py prefills that preamble at test time). Colour names, one test input
# per prompt, Llama 3.1's chat template; the program defines transform() and runs on BARC's common.py.
BARC_PREAMBLE = ("Let's solve this puzzle using Python code with the common library functions. We'll first reason "
                 "about the problem and then write the code to solve it. The `transform` function will take the "
                 "input grid and return the output grid. Here is the Python code with the comments describing how "
                 "to solve the problem:\n")
BARC_INDUCTION = Recipe(
    name="barc-induction", source="xu3kev/BARC finetune/alignment-handbook/gen_dataset_both.py; ironbar/arc25 "
                                  "arc25/prompting.py",
    grid=grid_text("colour_names"), chat="template",
    induction=Layout(
        system=("You are a world-class puzzle solver with exceptional pattern recognition skills and expertise in "
                "Python programming. Your task is to analyze puzzles and provide Python solutions."),
        instruction=("Given input-output grid pairs as reference examples, carefully observe the patterns to predict "
                     "the output grid for new test input. Each pair follows the same transformation rule. Grids are "
                     "2D arrays represented as strings, with cells (colors) separated by spaces and rows by newlines."
                     "\nHere are the input and output grids for the reference examples:\n"),
        example="Example {n}\nInput:\n{input}\nOutput:\n{output}\n\n", separator="",
        query="Here is the input grid for the test example:\nInput:\n{input}",
        closing=("\nWrite a Python function `transform` that can convert any given input grid to its corresponding "
                 "output grid based on the pattern observed in the reference examples."),
        prefill=BARC_PREAMBLE, answer=BARC_PREAMBLE + "```python\n{answer}\n```\n",
        tests_per_prompt=1, max_tokens=2048),  # its answers run to ~1500 tokens
)

# arc24 (ironbar/arc24, Qwen2.5-0.5B: scripts/arc24/prompting.py output-from-examples-v0, the default of
# scripts/inference.py; grids GridShapeEncoder(RowNumberEncoder(MinimalGridEncoder())) of scripts/arc24/encoders.py).
# One user message (a jinja template: its trailing newline is dropped), the model's chat template, and the
# assistant's answer prefilled up to "```grid"; it trained on n-1 (leave-one-out) tasks.
ARC24_SYSTEM = (
    "You are a helpful AI assistant. Your job is to solve tasks from the Abstraction and Reasoning Challenge (ARC). \n"
    "The user will present you with sample input and output grids for each task. \n"
    "Your job will be to understand the transformation between the input and the output and apply it to the last "
    "input grid given by the user. \n"
    "The puzzle-like inputs and outputs present a grid where each square can be one of ten colors. A grid can be any "
    "height or width between 1x1 and 30x30.\n"
    "The background of the grid is typically colored with 0.\n"
    "The tasks from ARC are based on the following priors:\n\n"
    "- Objectness: Objects persist and cannot appear or disappear without reason. Objects can interact or not "
    "depending on the circumstances.\n"
    "- Goal-directed: Objects can be animate or inanimate. Some objects are \"agents\" - they have intentions and "
    "they pursue goals.\n"
    "- Numbers & counting: Objects can be counted or sorted by their shape, appearance, or movement using basic "
    "mathematics like addition, subtraction, and comparison.\n"
    "- Basic geometry & topology: Objects can be shapes like rectangles, triangles, and circles which can be "
    "mirrored, rotated, translated, deformed, combined, repeated, etc. Differences in distances can be detected.\n\n"
    "The transformations between input and output should be based on these priors.\n")
ARC24 = Recipe(
    name="arc24", source="ironbar/arc24 scripts/arc24/prompting.py (output-from-examples-v0), scripts/arc24/encoders.py",
    grid=grid_text("arc24"), chat="template",
    transduction=Layout(
        system=ARC24_SYSTEM,
        instruction=("Let's see if you can solve this simple ARC task. These are some input-output grid examples "
                     "that define the task.\n"),
        example="\n## Example {n}\n\n### Input\n\n{input}\n\n### Output\n\n{output}\n", separator="",
        query="\n## Test case\n\n### Input\n\n{input}",
        prefill="### Output\n\n```grid", answer="### Output\n\n{answer}"),
)

RECIPES = MappingProxyType({
    "arc-submit": _OURS,
    "arc-submit-numbered": replace(_OURS, name="arc-submit-numbered", grid=grid_text("row_numbers")),
    # Short and instruction-free: our own terse layout (not the ARChitects' format: that is "architects-2024").
    "compact": replace(_OURS, name="compact", source="this package's own terse layout",
                       transduction=Layout(example="I\n{input}\nO\n{output}", separator="\n", query="I\n{input}\nO\n",
                                           answer_suffix="\n\n"),
                       induction=Layout(example="I\n{input}\nO\n{output}", separator="\n", query="T\n{input}",
                                        answer="```python\n{answer}\n```\n")),
    "nvarc": NVARC,
    "architects-2024": ARCHITECTS_2024,
    "barc-induction": BARC_INDUCTION,
    "arc24": ARC24,
})


def recipe(value=None, grid=None) -> Recipe:
    """A Recipe from a preset name, a dict of fields (optional "preset" to start from), "module:attribute", or a
    Recipe; `grid` (a GridText name or dict), when given, replaces its grid encoding. Errors name the choices."""
    if value is None or isinstance(value, Recipe):
        r = value or RECIPES["arc-submit"]
    elif isinstance(value, str) and value in RECIPES:
        r = RECIPES[value]
    elif isinstance(value, str) and ":" in value:
        module, attr = value.split(":", 1)
        try:
            r = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            raise ValueError(f"recipe {value!r}: {type(e).__name__}: {e}") from None
        if not isinstance(r, Recipe):
            raise ValueError(f"recipe {value!r} is a {type(r).__name__}, not a Recipe")
    elif isinstance(value, dict):
        r = _from_dict(value)
    else:
        raise ValueError(f"recipe {value!r}: use one of {', '.join(RECIPES)}, a dict of fields, or module:attribute")
    return replace(r, grid=grid_text(grid)) if grid else r


def _from_dict(value: dict) -> Recipe:
    known = {f.name for f in fields(Recipe)}
    unknown = sorted(set(value) - known - {"preset"})
    if unknown:
        raise ValueError(f"recipe: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(known | {'preset'}))}")
    base = recipe(value.get("preset", "arc-submit"))
    changes = {k: v for k, v in value.items() if k != "preset"}
    if "grid" in changes:
        changes["grid"] = grid_text(changes["grid"])
    for kind in ("transduction", "induction"):
        if isinstance(changes.get(kind), dict):
            changes[kind] = _sub(Layout, getattr(base, kind) or Layout(), changes[kind], f"recipe {kind}")
    if isinstance(changes.get("lora"), dict):
        lora = dict(changes["lora"])
        if lora.get("target_modules") is not None:
            lora["target_modules"] = tuple(lora["target_modules"])
        changes["lora"] = _sub(LoraRecipe, base.lora, lora, "recipe lora")
    changes.setdefault("name", f"custom (from {base.name})")
    return replace(base, **changes)


def _sub(cls, base, value: dict, what: str):
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(value) - known)
    if unknown:
        raise ValueError(f"{what}: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return replace(base, **value)

