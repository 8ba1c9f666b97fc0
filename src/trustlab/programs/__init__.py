"""LLM-based Symbolic Programs (LSP): decision trees of prompted LLM modules, learned by divide and conquer.

Kept light (the method record imports this package): the classes load on first use.

Example:
    >>> from trustlab.programs import LSP, Program
    >>> program = LSP(load_model("embedded"), max_nodes=4).fit(xs, ys)
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {"LSP": "lsp", "LSPConfig": "lsp", "fit_lsp": "lsp", "LabelError": "lsp", "Program": "program",
            "LSPNode": "program", "Prediction": "program", "ModuleRunner": "program", "map_answer": "outputs",
            "fit_single_prompt": "baselines"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f"trustlab.programs.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
