"""Context awareness: does a chat model use the context its user supplies?

- :mod:`trustlab.context.steering`: :class:`UserSteering`, attention steering toward user tokens;
- :mod:`trustlab.context.indicator`: the user-attention-ratio scorer, ``[IND]`` labelling and conditional
  fine-tuning;
- :mod:`trustlab.context.bench`: NIH and context-QA under no template / template / template + steering;
- :mod:`trustlab.context.audit`: the ``trustlab audit`` section.

Paper: Wang, Bai, Peng, Hsieh, "On the Loss of Context-awareness in General Instruction Fine-tuning",
arXiv:2411.02688.
"""

from trustlab.context.spans import RenderedPrompt, render_with_spans
from trustlab.context.steering import UserSteering

__all__ = ["RenderedPrompt", "UserSteering", "render_with_spans"]
