"""Parts the three engines (hf, vllm, unsloth) hold rather than inherit: whether the engine is still open, and the
table of its adapter handles with the folders they were saved to."""

from __future__ import annotations

import shutil
from typing import Callable

from ..fileio import safe_file_name
from .engine import Adapter


def check_adapter_name(name: str) -> str:
    """An adapter's name is also its folder's name (peft saves it under it, vLLM loads it from there): only a plain
    file name (fileio.safe_file_name leaves it as it is) may be one, so no name writes outside the adapter folder.
    Solvers name adapters `<solver>-<safe_file_name(task id)>`."""
    if safe_file_name(name) != name:
        raise ValueError(f"adapter name {name!r} is not a plain file name; use fileio.safe_file_name({name!r}) = "
                         f"{safe_file_name(name)!r}")
    return name


# LoRA on the token embeddings / LM head (NVARC and the ARChitects trained them): peft trains them, vLLM does not
# serve them (its LoRA loader rejects such weights for Qwen models: vllm-project/vllm issue 32599, PR 33234 open).
UNSERVED_BY_VLLM = ("embed_tokens", "lm_head")


def vllm_lora_problem(target_modules, lora_rank: int, max_lora_rank: int, engine: str = "vllm") -> str | None:
    """Why vLLM (the vllm engine, or unsloth's fast_inference) cannot serve this adapter, or None."""
    unserved = [m for m in target_modules if m in UNSERVED_BY_VLLM]
    if unserved:
        return (f"engine {engine}: LoRA on {', '.join(unserved)} cannot be served by vLLM (its LoRA loader has no "
                f"embedding or LM-head adapters for these models); use engine hf (or unsloth with fast_inference: "
                f"false), or leave {', '.join(unserved)} out of target_modules")
    if lora_rank > max_lora_rank:
        return (f"engine {engine}: lora_rank {lora_rank} exceeds the engine's max_lora_rank {max_lora_rank}; raise "
                f"max_lora_rank in the engine options (vLLM sizes its LoRA buffers by it) or lower lora_rank")
    return None


def handle_name(adapter: Adapter | str) -> str:
    """delete_adapter takes a handle or its name."""
    return adapter if isinstance(adapter, str) else adapter.name


class EngineLife:
    """Open until closed; closing frees once, whatever calls it again later (a worker's exit path, a test)."""

    def __init__(self) -> None:
        self.closed = False

    def check_open(self) -> None:
        if self.closed:
            raise RuntimeError("this engine was closed; create a new one")

    def close(self, free: Callable[[], None]) -> None:
        """Run `free` (drop the model, remove the engine's folders) the first time, then hand the GPU's cached
        memory back to the driver, so the next engine in this process or the memory plan sees it as free."""
        if self.closed:
            return
        self.closed = True
        free()
        release_gpu_memory()


class AdapterHandles:
    """The engine's trained adapters by name. Forgetting one also removes the peft folder it was saved to (vLLM
    serves adapters from disk); popping one keeps the folder (another engine still serves it)."""

    def __init__(self) -> None:
        self._by_name: dict[str, Adapter] = {}

    def __contains__(self, name: str) -> bool:
        return name in self._by_name

    def __len__(self) -> int:
        return len(self._by_name)

    def put(self, adapter: Adapter) -> None:
        self._by_name[adapter.name] = adapter

    def pop(self, name: str) -> Adapter | None:
        return self._by_name.pop(name, None)

    def forget(self, name: str) -> None:
        known = self._by_name.pop(name, None)
        if known is not None and known.path is not None:
            shutil.rmtree(known.path, ignore_errors=True)

    def clear(self) -> None:
        self._by_name.clear()


def release_gpu_memory() -> None:
    """After an engine dropped its model: collect it now and hand the cached blocks back to the driver, so the next
    engine in this process (or the memory plan's reading) sees the memory as free."""
    import gc

    gc.collect()
    try:
        import torch
    except ImportError:
        return
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
