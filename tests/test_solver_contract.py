"""The solver contract's structural promises: no module-level mutable state in solvers/ or llm/ (what a worker
learns lives in its SolverContext), one contract for solvers named in a config, and training that stops trying
after running out of memory, per worker."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import arc_submit
from arc_submit.solvers import NoOptions, Solver, SolverContext, resolve_solver
from arc_submit.solvers.common import PhaseClock, train_adapter_logged
from arc_submit.solvers.context import OOM_STREAK_LIMIT

PACKAGE = Path(arc_submit.__file__).parent
# Moving to a package of their own in another change; scanned there.
NOT_SCANNED = {"icecuber.py", "icecuber_files.py"}
MUTABLE_LITERALS = (ast.List, ast.Dict, ast.Set, ast.ListComp, ast.DictComp, ast.SetComp)
MUTABLE_CALLS = {"list", "dict", "set", "bytearray", "defaultdict", "deque", "OrderedDict", "Counter",
                 "WeakKeyDictionary", "WeakValueDictionary", "WeakSet"}
HIDDEN_CACHES = {"lru_cache", "cache", "register"}  # functools' caches; atexit.register keeps an object alive


def _name(node: ast.AST) -> str:
    if isinstance(node, ast.Call):
        node = node.func
    return node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else ""


def mutable_state(source: str) -> list[str]:
    """Module- and class-level assignments of mutable containers, `global` statements, and functions wrapped in
    a cache or registered at exit: what lets state outlive a call without anyone passing it."""
    found = []
    tree = ast.parse(source)
    scopes = [tree.body] + [n.body for n in ast.walk(tree) if isinstance(n, ast.ClassDef)]
    for body in scopes:
        for node in body:
            if not isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)) or node.value is None:
                continue
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):  # the import list, by convention
                continue
            value = node.value
            if isinstance(value, MUTABLE_LITERALS) or (isinstance(value, ast.Call) and _name(value) in MUTABLE_CALLS):
                found.append(f"line {node.lineno}: {ast.unparse(node)[:60]}")
        for node in body:
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call) and _name(node.value) == "register":
                found.append(f"line {node.lineno}: {ast.unparse(node)[:60]}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Global):
            found.append(f"line {node.lineno}: global {', '.join(node.names)}")
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            found += [f"line {node.lineno}: @{ast.unparse(d)} {node.name}" for d in node.decorator_list
                      if _name(d) in HIDDEN_CACHES]
    return found


def test_the_scan_finds_the_state_this_package_used_to_keep():
    before = ("_NOTES: list[dict] = []\n_SPEEDS = {}\n_executor = None\n"
              "def executor_for(settings):\n    global _executor\n"
              "@atexit.register\ndef close_executor():\n    pass\n"
              "class Engine:\n    adapters = dict()\n"
              "PRESETS = MappingProxyType({'a': 1})\n__all__ = ['Engine']\n")
    assert len(mutable_state(before)) == 5, mutable_state(before)


@pytest.mark.parametrize("path", sorted(p for folder in ("solvers", "llm") for p in (PACKAGE / folder).glob("*.py")
                                        if p.name not in NOT_SCANNED), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_no_module_level_mutable_state(path):
    assert mutable_state(path.read_text()) == []


def test_a_plain_function_is_refused_naming_the_fix():
    with pytest.raises(ValueError, match=r"transduction:solve is a function, not a Solver; wrap it: solve = Solver"):
        resolve_solver("arc_submit.solvers.transduction:solve")
    with pytest.raises(ValueError, match="use one of transduction, induction, or module:attribute"):
        resolve_solver("transductoin")
    assert resolve_solver("induction").verifies and not resolve_solver("transduction").verifies
    with pytest.raises(ValueError, match=r"solo solver: unknown option\(s\) x; known: none"):
        Solver("solo", lambda task, deadline, context, options: []).make_options({"x": 1})
    assert Solver("solo", lambda task, deadline, context, options: []).make_options({}) == NoOptions()


class TrainingOutOfMemory:
    """TEST DOUBLE: an engine whose training always runs out of GPU memory (all train_adapter_logged asks of one)."""
    prefills_per_sample = False

    def __init__(self):
        self.tries = 0

    def train_adapter(self, name, examples, settings, deadline=None):
        self.tries += 1
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")


def test_training_that_runs_out_of_memory_twice_is_off_for_this_worker_only(caplog):
    """The out-of-memory streak belongs to the worker's context: a second context (another worker, another
    engine) still trains."""
    from arc_submit.budget import Deadline
    from arc_submit.llm.engine import TrainSettings

    engine = TrainingOutOfMemory()
    notes = []
    context = SolverContext.for_engine(engine, note=lambda task_id, kind, text: notes.append((task_id, kind)))
    pairs = [("prompt", "completion")]
    for i in range(OOM_STREAK_LIMIT + 1):
        clock = PhaseClock("test", f"task-{i}")
        assert train_adapter_logged(context, "a", pairs, TrainSettings(), Deadline.in_seconds(5), clock) is None
    assert engine.tries == OOM_STREAK_LIMIT  # the third task did not try
    assert notes == [(f"task-{i}", "training-oom") for i in range(OOM_STREAK_LIMIT)]
    assert "off for the rest of this worker's tasks" in caplog.text

    other = SolverContext.for_engine(engine)
    train_adapter_logged(other, "a", pairs, TrainSettings(), Deadline.in_seconds(5), PhaseClock("test", "t"))
    assert engine.tries == OOM_STREAK_LIMIT + 1
