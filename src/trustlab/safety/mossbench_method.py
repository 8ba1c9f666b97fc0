"""The MOSSBench record for the registry: the MOSSBench-text proxy reproduction, the audit section and
``trustlab eval mossbench``."""

from trustlab.registry import register_method

register_method(
    id="mossbench",
    title="MOSSBench multimodal oversensitivity",
    area="defend",
    spec="mossbench.md",
    reproduce="trustlab.reproduce.mossbench:run",
    audit="trustlab.safety.mossbench_audit:run",
    section="oversensitivity",
    cli={"eval mossbench": "trustlab.cli.mossbench:mossbench"},
)
