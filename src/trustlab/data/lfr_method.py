"""The LFR record for the registry: its reproduction and ``trustlab pretrain``.

No audit section: LFR changes how a model is pretrained, not what an existing model does.
"""

from trustlab.registry import register_method

register_method(
    id="lfr",
    title="LFR: Learn-Focus-Review pretraining data schedule",
    area="train",
    spec="lfr.md",
    reproduce="trustlab.reproduce.lfr:run",
    cli={"pretrain": "trustlab.cli.pretrain:pretrain"},
)
