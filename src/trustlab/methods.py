"""The 14 methods trustlab implements, in one registry: id, title, area and module home.

The README table and ``trustlab reproduce`` read this list; a method's status in the table comes only
from its committed ``results/<id>/summary.json``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    id: str
    title: str
    area: str
    module: str
    spec: str


METHODS: tuple[Method, ...] = (
    Method("lora-rite", "LoRA-RITE transformation-invariant LoRA optimizer", "train", "trustlab.optim", "lora-rite.md"),
    Method("lfr", "Learn-Focus-Review data schedule", "train", "trustlab.data", "lfr.md"),
    Method("mix-cd", "mix-cd: rehearse damaged samples", "train", "trustlab.data", "mix-cd.md"),
    Method("context-awareness", "Context awareness: benchmark, attention steering, [IND] fine-tuning",
           "steer", "trustlab.context", "context-awareness.md"),
    Method("backtranslation", "Backtranslation jailbreak defense", "defend", "trustlab.safety", "backtranslation.md"),
    Method("clue", "CLUE concept-level uncertainty", "defend", "trustlab.uncertainty", "clue.md"),
    Method("mixture-of-prompts", "Mixture-of-Prompts", "steer", "trustlab.prompting", "mixture-of-prompts.md"),
    Method("formulate-and-solve", "Formulate-and-Solve + BeyondX", "steer", "trustlab.prompting",
           "beyondx-formulate-and-solve.md"),
    Method("lsp", "LLM-based Symbolic Programs + IL-Bench", "steer", "trustlab.programs", "lsp-ilbench.md"),
    Method("concept-gradient", "Concept Gradient", "explain", "trustlab.explain", "concept-gradient.md"),
    Method("diffusion-tracin", "Diffusion-TracIn / ReTrac attribution", "explain", "trustlab.attribution",
           "diffusion-tracin-retrac.md"),
    Method("memorization-fingerprint", "ViT-layer memorization fingerprints", "explain", "trustlab.forensics",
           "memorization-fingerprint.md"),
    Method("dpo-diff", "DPO-Diff prompt optimization for text-to-image", "explain", "trustlab.prompting",
           "dpo-diff.md"),
    Method("mossbench", "MOSSBench oversensitivity benchmark", "defend", "trustlab.safety", "mossbench.md"),
)


def get_method(method_id: str) -> Method:
    for m in METHODS:
        if m.id == method_id:
            return m
    known = ", ".join(m.id for m in METHODS)
    raise KeyError(f"unknown method {method_id!r}; known: {known}")
