"""The memorization-fingerprint record for the registry: its reproduction and ``trustlab fingerprint``.

No audit section: the method scores image generators against their training set, not a language model under
audit.
"""

from trustlab.registry import register_method

register_method(
    id="memorization-fingerprint",
    title="ViT-layer memorization fingerprints of generators",
    area="explain",
    spec="memorization-fingerprint.md",
    reproduce="trustlab.reproduce.memorization_fingerprint:run",
    cli={"fingerprint": "trustlab.cli.forensics:fingerprint"},
)
