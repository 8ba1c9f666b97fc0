"""Prompting methods (Formulate-and-Solve, Mixture-of-Prompts) and their safe parsers for model output."""

from trustlab.prompting.equations import parse_equations

__all__ = ["parse_equations"]
