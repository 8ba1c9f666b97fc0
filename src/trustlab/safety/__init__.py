"""Jailbreak defenses and refusal detection.

- :class:`BacktranslationDefense`: infer the request from the response, refuse what the model refuses.
- :class:`SmoothLLM`: perturb-and-vote baseline defense.
- :class:`KeywordRefusal`, :class:`LLMRefusalJudge`: pluggable refusal detectors, with
  :func:`error_rates` on the shipped labelled set.
"""

from trustlab.safety.backtranslation import (
    REFUSAL_TEXT,
    BacktranslationDefense,
    DefenseTrace,
    parse_inferred_request,
)
from trustlab.safety.refusal import KeywordRefusal, LLMRefusalJudge, error_rates, labelled_refusals
from trustlab.safety.smoothllm import SmoothLLM

__all__ = [
    "REFUSAL_TEXT", "BacktranslationDefense", "DefenseTrace", "KeywordRefusal", "LLMRefusalJudge", "SmoothLLM",
    "error_rates", "labelled_refusals", "parse_inferred_request",
]
