"""Prompting methods (Formulate-and-Solve, Mixture-of-Prompts) and their safe parsers for model output."""

from trustlab.prompting.equations import parse_equations
from trustlab.prompting.formulate_solve import Demo, FormulateAndSolve, parse_system
from trustlab.prompting.mop import MoP, MoPConfig, MoPModel
from trustlab.prompting.reasoning import STRATEGIES, make_strategy
from trustlab.prompting.solver import Solver, SolveResult

__all__ = ["Demo", "FormulateAndSolve", "MoP", "MoPConfig", "MoPModel", "STRATEGIES", "SolveResult", "Solver", "make_strategy", "parse_equations",
           "parse_system"]
