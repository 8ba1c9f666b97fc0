"""The LSP record for the registry: the reproduction and ``trustlab learn-program``."""

from trustlab.registry import register_method

register_method(
    id="lsp",
    title="LLM-based Symbolic Programs + IL-Bench",
    area="steer",
    spec="lsp-ilbench.md",
    reproduce="trustlab.reproduce.lsp:run",
    cli={"learn-program": "trustlab.cli.programs:learn_program"},
)
