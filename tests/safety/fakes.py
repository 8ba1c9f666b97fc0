"""A scripted model for control-flow tests (never for numbers): answers by looking up the prompt."""

from __future__ import annotations

from collections.abc import Callable

from trustlab.models.base import Capabilities, Generation, ModelHandle, plain_text


class ScriptedModel(ModelHandle):
    """Answers ``script(prompt_text)``; records every prompt it was asked, per generate call."""

    def __init__(self, script: Callable[[str], str], name: str = "scripted"):
        self.script = script
        self.name = name
        self.capabilities = Capabilities(backend="scripted", chat_template=True)
        self.asked: list[list[str]] = []

    def _generate(self, prompts, cfg, chat_template):
        texts = [plain_text(p) for p in prompts]
        self.asked.append(texts)
        return [[Generation(text=self.script(t)) for _ in range(cfg.n)] for t in texts]
