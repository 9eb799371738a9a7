"""arc_submit: one reliable Kaggle run for an ARC Prize entry (icecuber + LLM solvers, 4 GPUs, one deadline)."""

__version__ = "0.1.0"
