"""`arc-submit prompt`: exactly what the engine gets for one test input of a task, under a recipe (identity view).

Check a model's format here before a 12-hour run: the chat messages, the text the engine tokenises (chat template
applied), and the token ids, decided by the model's own tokenizer. The JSON keys (`messages`, `text`, `ids`) are a
contract: checks rely on them.
"""

from __future__ import annotations

from dataclasses import dataclass

from .llm import prompts
from .llm.recipes import Recipe
from .tasks import Task


@dataclass(frozen=True)
class PromptView:
    recipe: Recipe
    kind: str  # transduction or induction
    task_id: str
    test_indices: tuple[int, ...]  # the test inputs the prompt shows
    rendered: prompts.Rendered
    ids: list[int] | None  # with a tokenizer

    def as_json(self) -> dict:
        return {"recipe": self.recipe.name, "source": self.recipe.source, "kind": self.kind, "task": self.task_id,
                "test_indices": list(self.test_indices), "messages": self.rendered.messages,
                "text": self.rendered.text, "ids": self.ids}

    def lines(self) -> list[str]:
        """The readable view: each message by role, then the text with its line breaks shown, then the ids."""
        out = [f"recipe {self.recipe.name} ({self.kind}; {self.recipe.source})",
               f"task {self.task_id}, test input {', '.join(map(str, self.test_indices))}", ""]
        if self.rendered.messages is not None:
            for m in self.rendered.messages:
                out += [f"--- {m['role']} ---", m["content"]]
            out.append("")
        if self.rendered.text is None:
            out.append("=== text: needs the model's tokenizer (its chat template or end token): pass --model DIR ===")
        else:
            out += ["=== text (what the engine tokenises; ⏎ marks a line break) ===",
                    self.rendered.text.replace("\n", "⏎\n")]
        if self.ids is not None:
            out += ["", f"=== {len(self.ids)} token ids ===", " ".join(map(str, self.ids))]
        return out


def kind_of(r: Recipe, wanted: str | None) -> str:
    """The solver kind whose prompt to show: the one asked for, else the recipe's only one (transduction if both)."""
    if wanted:
        r.layout(wanted)  # an error naming the recipes that have one
        return wanted
    return "transduction" if r.transduction is not None else "induction"


def prompt_view(r: Recipe, task: Task, test_index: int, tokenizer=None, kind: str | None = None) -> PromptView:
    from .llm.training import prompt_ids

    if not 0 <= test_index < len(task.test):
        raise ValueError(f"task {task.id} has {len(task.test)} test input(s); --test-index {test_index} is out of "
                         f"range 0..{len(task.test) - 1}")
    kind = kind_of(r, kind)
    if kind == "transduction":
        shown = (test_index,)
        rendered = prompts.transduction_prompt(r, task.train, task.test[test_index].input, tokenizer)
    else:
        shown = next(g for g in prompts.test_groups(r, len(task.test)) if test_index in g)
        rendered = prompts.induction_prompt(r, task.train, [task.test[t].input for t in shown], tokenizer)
    ids = prompt_ids(tokenizer, rendered.text) if tokenizer is not None and rendered.text is not None else None
    return PromptView(r, kind, task.id, shown, rendered, ids)
