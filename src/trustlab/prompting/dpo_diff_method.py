"""The DPO-Diff record for the registry: its reproduction and ``trustlab dpo-diff``.

No audit section: DPO-Diff searches prompts for a text-to-image model, it does not audit a language model.
"""

from trustlab.registry import register_method

register_method(
    id="dpo-diff",
    title="DPO-Diff prompt optimization for text-to-image",
    area="explain",
    spec="dpo-diff.md",
    reproduce="trustlab.reproduce.dpo_diff:run",
    cli={"dpo-diff": "trustlab.cli.dpo_diff:dpo_diff"},
)
