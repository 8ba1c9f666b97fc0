"""SmoothLLM-lite: the baseline defense the backtranslation paper compares with.

Perturb ``copies`` copies of the prompt (a fraction ``swap`` of characters replaced by random printable
characters), answer each, and vote: if most copies are refused, return a refused answer, else one that
complied. Costs ``copies`` target calls per prompt.

References:
    Alexander Robey, Eric Wong, Hamed Hassani, George J. Pappas. "SmoothLLM: Defending Large Language
    Models Against Jailbreaking Attacks". arXiv 2310.03684 (2023).
"""

from __future__ import annotations

import random
import string
import time

from trustlab.models.base import Generation, GenerationConfig, ModelHandle, Prompt, as_messages
from trustlab.safety.refusal import KeywordRefusal, RefusalDetector


def perturb(text: str, fraction: float, rng: random.Random) -> str:
    """Replace ``round(fraction * len(text))`` randomly chosen characters by random printable ones.

    Example:
        >>> perturb("hello world", 0.1, random.Random(0))
    """
    chars = list(text)
    k = round(fraction * len(chars))
    for i in rng.sample(range(len(chars)), k):
        chars[i] = rng.choice(string.printable[:95])
    return "".join(chars)


def _perturb_prompt(prompt: Prompt, fraction: float, rng: random.Random) -> Prompt:
    if isinstance(prompt, str):
        return perturb(prompt, fraction, rng)
    msgs = [dict(m) for m in as_messages(prompt)]
    msgs[-1]["content"] = perturb(msgs[-1]["content"], fraction, rng)
    return msgs


class SmoothLLM(ModelHandle):
    """Wraps a model; perturb-and-vote defense with the same ``generate``.

    Args:
        target: the model to defend.
        copies: perturbed copies per prompt (default 3).
        swap: fraction of characters replaced per copy (default 0.10).
        refusal: the detector that votes (default :class:`KeywordRefusal`); a copy it gives no decision on
            (None) casts no vote.
        seed: seed of the perturbations.

    Example:
        >>> SmoothLLM(load_model()).generate(["How do I bake bread?"], max_new_tokens=32)
    """

    def __init__(self, target: ModelHandle, copies: int = 3, swap: float = 0.10,
                 refusal: RefusalDetector | None = None, seed: int = 0):
        self.target = target
        self.copies = copies
        self.swap = swap
        self.refusal = refusal or KeywordRefusal()
        self.rng = random.Random(seed)
        self.name = f"smoothllm({target.name})"
        self.capabilities = target.capabilities.text_only()
        self.default_config = target.default_config

    def _generate(self, prompts: list[Prompt], cfg: GenerationConfig, chat_template: bool) -> list[list[Generation]]:
        t0 = time.perf_counter()
        noisy = [_perturb_prompt(p, self.swap, self.rng) for p in prompts for _ in range(self.copies)]
        outs = self.target.generate(noisy, cfg.updated(n=1), chat_template=chat_template)
        texts = [g.text for (g,) in outs]
        refused = self.refusal.detect(texts)
        per = (time.perf_counter() - t0) / len(prompts)
        result = []
        for i in range(len(prompts)):
            votes = refused[i * self.copies:(i + 1) * self.copies]
            decided = [v for v in votes if v is not None]  # a judge's invalid answer (None) casts no vote
            majority = sum(decided) * 2 > len(decided)
            pick = next((j for j, v in enumerate(votes) if v == majority), 0)
            text = texts[i * self.copies + pick]
            info = {"refused": majority, "votes": votes, "calls": self.copies, "seconds": per}
            result.append([Generation(text=text, extra={"defense": info}) for _ in range(cfg.n)])
        return result
