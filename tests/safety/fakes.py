"""A scripted model for control-flow tests (never for numbers): answers by looking up the prompt."""

from __future__ import annotations

from collections.abc import Callable

from trustlab.models.base import Capabilities, Generation, ModelHandle, check_prompts, plain_text


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


def spy(handle: ModelHandle) -> ModelHandle:
    """Record which prompts ``handle`` is asked, by entry point, in ``handle.calls`` (``{"generate": [...],
    "forward": [...], "loglikelihood": [...]}``, plain texts; loglikelihood records the contexts), so a
    test can check that each role's calls went to its own handle. The handle works as before."""
    handle.calls = {"generate": [], "forward": [], "loglikelihood": []}

    def recording(name: str, texts):
        inner = getattr(handle, name)

        def call(first, *args, **kwargs):
            handle.calls[name] += texts(first)
            return inner(first, *args, **kwargs)

        return call

    def texts(prompts):
        return [plain_text(p) for p in check_prompts(prompts)]

    handle.generate = recording("generate", texts)
    if hasattr(handle, "forward"):
        handle.forward = recording("forward", texts)
    handle.loglikelihood = recording("loglikelihood", lambda reqs: [plain_text(c) for c, _ in reqs])
    return handle
