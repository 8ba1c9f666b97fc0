"""The mix-cd record for the registry: its reproduction.

Fine-tuning with rehearsal is ``trustlab finetune DATA --rehearsal mixcd`` (a shared command, not this
record's). No audit section: mix-cd changes how a model is fine-tuned, not what an existing model does.
"""

from trustlab.registry import register_method

register_method(
    id="mix-cd",
    title="mix-cd: rehearse the samples fine-tuning damages",
    area="train",
    spec="mix-cd.md",
    reproduce="trustlab.reproduce.mix_cd:run",
)
