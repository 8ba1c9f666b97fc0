"""Backtranslation defense against jailbreaks: infer the request from the response, refuse if the
model refuses the inferred request.

What differs from a plain refusal check on the response: the decision is taken on a prompt S' that a
model *inferred from the response*, which the attacker does not control, so wrappers, role-play and
suffixes around the harmful request do not survive into S'.

Steps for a prompt S (one sample at a time, all steps batched over prompts):

1. ``O = target(S)``; if ``O`` is a refusal -> refuse.
2. ``S' = backtranslator("guess the request behind O")``, parsed from ``Request: [[...]]``.
   No real ``S'`` -> return ``O``, as the spec says for an empty one. An answer that copies the
   prompt's worked example or format text, or is a fragment, is not a request: it is counted as an
   invalid backtranslation (``trace.invalid_request`` says why), never run as ``S'``.
3. Likelihood filter (optional): ``l = mean log P_B(O_i | S', O_<i)`` over the first ``n_lik`` tokens
   of ``O`` on the raw text; ``l <= gamma`` means S' does not explain O -> return ``O``.
4. ``O' = target(S')``; if ``O'`` is a refusal (asking for clarification does not count) -> refuse,
   else return ``O``.

Three roles, each any handle: the *target* (answers S and S'), the *backtranslator* (infers S' and,
white-box, scores the likelihood; the paper allows a different model than the target) and the refusal
*detectors* (keyword matching by default, or an :class:`~trustlab.safety.refusal.LLMRefusalJudge` on a
third model). A judge that gives no decision (an LLM answer that is neither yes nor no) is invalid, never
a coin flip: on O the defense goes on checking (as if O were no refusal); on the likelihood filter, the
sample is not filtered; on O' nothing is decided (``no_refusal_judgment``: O is returned, like an empty
S'). Each such step is named in ``trace.invalid_judgments``.

References:
    Yihan Wang, Zhouxing Shi, Andrew Bai, Cho-Jui Hsieh. "Defending LLMs against Jailbreaking Attacks
    via Backtranslation". arXiv 2402.16459 (2024).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, NamedTuple

from trustlab.errors import CapabilityError
from trustlab.models.base import Generation, GenerationConfig, ModelHandle, Prompt, plain_text
from trustlab.safety.refusal import KeywordRefusal, RefusalDetector
from trustlab.validity import ValidityCounter, copies_example, echoes_source, is_fragment, words

REFUSAL_TEXT = "I'm sorry, but I cannot assist with that request."

# Our paraphrase of the paper's backtranslation prompt, with one benign worked example. The format
# placeholder is "[[...]]" (no words), so a copied placeholder parses as a fragment, never as a request.
WORKED_RESPONSE = "Paris is the capital of France. It is known for the Eiffel Tower and the Louvre."
WORKED_REQUEST = "What is the capital of France and what is it known for?"
FORMAT_TEXT = (
    "Please guess the user's request that the AI assistant answers in the following response. "
    "If several requests are possible, give the most harmful one. Answer only in the format "
    "Request: [[...]]."
)
BACKTRANSLATION_TEMPLATE = (
    f"{FORMAT_TEXT}\n\n"
    f"Response: \"{WORKED_RESPONSE}\"\n"
    f"Request: [[{WORKED_REQUEST}]]\n\n"
    "Response: \"{response}\"\n"
)
# what a backtranslation must not copy: the worked example and the instructions (their old wording too)
_PROMPT_TEXTS = (WORKED_RESPONSE, WORKED_REQUEST, FORMAT_TEXT)
_PLACEHOLDERS = ("the request", "...", "request")
MIN_REQUEST_WORDS = 2
# a bracketed placeholder of a format text ("[the request]", "[Your Request]"), also half-stripped
_PLACEHOLDER = re.compile(r"\[\s*(?:the|your|user'?s)?\s*request|\brequest\s*\]", re.I)
FORMAT_ECHO_WORDS = 4  # "in the format Request", "give the most harmful one"
_LABEL = re.compile(r"\brequest\s*:[ \t]*([^\n]*)", re.I)

EXPLAIN_TEMPLATE = (
    "Request: \"{request}\"\nResponse: \"{response}\"\n\n"
    "Is the response a direct answer to this request? Answer yes or no."
)

# decisions, in the order the steps can take them
DECISIONS = ("refused_initially", "no_inferred_request", "filtered_unexplained", "refused_backtranslated",
             "no_refusal_judgment", "passed")
# the steps whose judgment can be invalid (DefenseTrace.invalid_judgments)
JUDGED_STEPS = ("response", "explain", "inferred_response")


class InferredRequest(NamedTuple):
    """A parsed backtranslation: the request S' ("" when there is none) and, if so, why not."""

    request: str
    invalid: str | None = None


def request_problem(request: str, response: str | None = None) -> str | None:
    """Why a parsed request is not a real inferred request, or None when it is one.

    A small backtranslator often copies the prompt instead of answering it: the worked example, the
    format text, or a fragment. Such text is not a request, and running the target on it measures
    nothing. Copies that also occur in ``response`` (the text being backtranslated) are allowed.

    Returns:
        ``"no request"``, ``"fragment"`` (fewer than 3 letters or 2 words), ``"copies the format"``
        or ``"copies the worked example"``; None for a real request.

    Example:
        >>> request_problem("How do I bake bread?"), request_problem('10'), request_problem("[the request]")
        (None, 'fragment', 'copies the format')
    """
    if not request.strip():
        return "no request"
    if is_fragment(request) or len(words(request)) < MIN_REQUEST_WORDS:
        return "fragment"
    if _PLACEHOLDER.search(request) or copies_example(request, _PLACEHOLDERS) \
            or echoes_source(request, FORMAT_TEXT, FORMAT_ECHO_WORDS, unless_in=response):
        return "copies the format"
    if copies_example(request, (WORKED_REQUEST, WORKED_RESPONSE), unless_in=response) \
            or echoes_source(request, WORKED_RESPONSE, unless_in=response):
        return "copies the worked example"
    return None


def _candidate(text: str, rule: str) -> str:
    """The text a rule reads as the request, before any validity check."""
    if rule == "official":
        if ":" not in text:
            return ""
        after = text.rsplit(":", 1)[1].strip()
        return (after.splitlines()[0] if after else "").replace("[[", "").replace("]]", "").strip()
    blocks = [" ".join(b.split()) for b in re.findall(r"\[\[(.*?)\]\]", text, flags=re.S)]
    if any(blocks):
        return [b for b in blocks if b][-1]
    if blocks:  # only empty brackets
        return ""
    if "[[" in text:  # cut off before "]]"
        tail = text.rsplit("[[", 1)[1].strip().splitlines()
        return tail[0].strip(" ]") if tail else ""
    label = _LABEL.search(text)  # "Request: ..." without the brackets
    found = label.group(1).strip().strip("\"' ") if label else ""
    return found[1:-1].strip() if found.startswith("[") and found.endswith("]") else found


def parse_inferred_request(text: str, rule: str = "brackets", *, response: str | None = None) -> InferredRequest:
    """The request a backtranslation answer names, or none (with the reason) when it names no real one.

    Args:
        text: the backtranslator's answer, e.g. ``"Request: [[How do I bake bread?]]"``.
        rule: ``"brackets"`` (default): the last closed ``[[...]]`` block, else the rest of the line
            after the last ``[[``, else the rest of the first line labelled ``Request:``; no other
            text is read as a request. ``"official"`` (parity with the paper's code): the text after
            the last ':' (none -> empty), first line, ``[[``/``]]`` stripped; it breaks when the
            request itself contains a colon.
        response: the response O that was backtranslated (a copy of the worked example that also
            occurs in O is not an echo).

    Returns:
        ``InferredRequest(request, invalid)``: ``request`` is "" and ``invalid`` says why (see
        :func:`request_problem`) when the answer copies the prompt, is a fragment or names nothing.

    Example:
        >>> parse_inferred_request("Request: [[Step 1: mix flour and water?]]")
        InferredRequest(request='Step 1: mix flour and water?', invalid=None)
        >>> parse_inferred_request('Request: [[Paris is the capital of France.]]')
        InferredRequest(request='', invalid='copies the worked example')
    """
    if rule not in ("brackets", "official"):
        raise ValueError(f"rule must be 'brackets' or 'official', got {rule!r}")
    candidate = _candidate(text, rule)
    problem = request_problem(candidate, response)
    return InferredRequest("" if problem else candidate, problem)


def backtranslation_validity(traces: Sequence[DefenseTrace | dict[str, Any]]) -> ValidityCounter:
    """Count the backtranslations that named a real request among the traces that needed one.

    Example:
        >>> backtranslation_validity(defense.trace(prompts)).to_dict()
        {'valid': 3, 'invalid': 2, 'valid_rate': 0.6, 'invalid_reasons': {'fragment': 2}}
    """
    counter = ValidityCounter()
    for t in traces:
        d = t if isinstance(t, dict) else asdict(t)
        if d["backtranslation"] is None:
            continue
        if d["invalid_request"]:
            counter.invalid(d["invalid_request"])
        else:
            counter.valid()
    return counter


@dataclass
class DefenseTrace:
    """Everything the defense saw and decided for one sample.

    Attributes:
        prompt: the user's prompt S (as plain text).
        response: the target's first response O.
        initial_refusal: whether O was a refusal.
        backtranslation: the backtranslator's raw answer (None when not asked).
        inferred_request: the parsed request S' (None when not asked; "" when the answer named no real
            request).
        invalid_request: why the answer named no real request (see :func:`request_problem`: it copied
            the worked example or the format, was a fragment, or named nothing); None otherwise.
        likelihood: mean log-likelihood l of O given S' (None when not computed).
        inferred_response: the target's response O' to S' (None when not run).
        inferred_refusal: whether O' was a refusal (None when not run).
        invalid_judgments: the steps of :data:`JUDGED_STEPS` whose judge gave no decision (an LLM refusal
            judge or explain judge whose answer was neither yes nor no); empty with the keyword detector
            and the log-likelihood filter.
        decision: one of :data:`DECISIONS`.
        output: the text returned to the user.
        refused: whether the output is the defense's refusal.
        calls: per-sample model calls spent (target, backtranslator and scorer together).
        seconds: wall time of the whole defense for the batch, divided by the number of samples.
        response_seconds: the same for step 1 alone (the undefended call).
    """

    prompt: str
    response: str
    initial_refusal: bool
    backtranslation: str | None = None
    inferred_request: str | None = None
    invalid_request: str | None = None
    likelihood: float | None = None
    inferred_response: str | None = None
    inferred_refusal: bool | None = None
    invalid_judgments: list[str] = field(default_factory=list)
    decision: str = "passed"
    output: str = ""
    refused: bool = False
    calls: int = 1
    seconds: float = 0.0
    response_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _generate_by_length(model: ModelHandle, prompts: list[Prompt], cfg: GenerationConfig,
                        chat_template: bool) -> list[list[Generation]]:
    """``model.generate`` with prompts sent shortest first (batches pad less), results in input order."""
    order = sorted(range(len(prompts)), key=lambda i: len(plain_text(prompts[i])))
    out = model.generate([prompts[i] for i in order], cfg, chat_template=chat_template)
    back = dict(zip(order, out, strict=True))
    return [back[i] for i in range(len(prompts))]


class BacktranslationDefense(ModelHandle):
    """Wraps a model; ``generate`` answers like the model but refuses what backtranslation exposes.

    Args:
        target: the model to defend (any backend): it answers S and the inferred S'.
        backtranslator: the model that infers requests S' from responses and scores the likelihood filter
            (default: ``target``); any handle, e.g. a larger model defending a small target, as the paper
            allows. The loglik filter needs it white-box.
        gamma: likelihood threshold (default -2.0); ``float("-inf")`` disables the filter (required
            for backtranslators without prompt log-probs, e.g. most OpenAI-compatible servers).
        n_lik: tokens of O scored by the filter (default 150).
        refusal: detector for O (default :class:`KeywordRefusal`; an
            :class:`~trustlab.safety.refusal.LLMRefusalJudge` puts a judge model in this role).
        inferred_refusal: detector for O' (default: the same as ``refusal``).
        allow_clarification: on O', a response that only asks for more information is not a refusal
            (default True: the official, asymmetric behaviour).
        explain_scorer: ``"loglik"`` (default, white-box: needs ``loglikelihood`` and a tokenizer),
            ``"judge"`` (the backtranslator answers "is O a direct answer to S'?"; the score is
            log P(yes), compared with ``gamma`` too), or a callable ``(requests, responses) -> scores``.
        return_new_response_anyway: return O' instead of O when not refusing (default False).
        parse: ``"brackets"`` (default) or ``"official"``, see :func:`parse_inferred_request`.
        backtranslate_max_new_tokens: tokens for the backtranslation answer (default 64).
        inferred_max_new_tokens: tokens for O' (default: the call's ``max_new_tokens``); refusals show
            early, so a shorter O' saves time.
        refusal_text: the fixed refusal returned (default :data:`REFUSAL_TEXT`).

    Each returned :class:`Generation` carries its :class:`DefenseTrace` as ``extra["defense"]``.

    Example:
        >>> model = load_model()
        >>> defended = BacktranslationDefense(model, gamma=-2.0)
        >>> out = defended.generate(["How do I bake bread?"], max_new_tokens=64)[0][0]
        >>> out.text, out.extra["defense"]["decision"]
        >>> # three roles, three handles: target, backtranslator, refusal judge
        >>> bigger = load_model("embedded:qwen2.5-coder-1.5b")
        >>> defended = BacktranslationDefense(model, bigger, refusal=LLMRefusalJudge(bigger))
        >>> defended.roles()
        {'target': 'embedded:SmolLM2-135M-Instruct', 'backtranslator': 'embedded:Qwen2.5-Coder-1.5B-Instruct', ...}
    """

    def __init__(
        self,
        target: ModelHandle,
        backtranslator: ModelHandle | None = None,
        *,
        gamma: float = -2.0,
        n_lik: int = 150,
        refusal: RefusalDetector | None = None,
        inferred_refusal: RefusalDetector | None = None,
        allow_clarification: bool = True,
        explain_scorer: str | Callable[[list[str], list[str]], list[float]] = "loglik",
        return_new_response_anyway: bool = False,
        parse: str = "brackets",
        backtranslate_max_new_tokens: int = 64,
        inferred_max_new_tokens: int | None = None,
        refusal_text: str = REFUSAL_TEXT,
    ):
        self.target = target
        self.backtranslator = backtranslator or target
        self.gamma = gamma
        self.n_lik = n_lik
        self.refusal = refusal or KeywordRefusal()
        self.inferred_refusal = inferred_refusal or self.refusal
        self.allow_clarification = allow_clarification
        self.return_new_response_anyway = return_new_response_anyway
        self.parse = parse
        self.backtranslate_max_new_tokens = backtranslate_max_new_tokens
        self.inferred_max_new_tokens = inferred_max_new_tokens
        self.refusal_text = refusal_text
        self.explain_scorer = self._make_scorer(explain_scorer)
        self.name = f"backtranslation({target.name})"
        self.capabilities = target.capabilities.text_only()
        self.default_config = target.default_config

    def roles(self) -> dict[str, str]:
        """The name of the model (or detector) in each role: target, backtranslator, refusal, inferred_refusal."""
        def who(detector: Any) -> str:
            model = getattr(detector, "model", None)
            return f"{detector.name}:{model.name}" if model is not None else detector.name

        return {"target": self.target.name, "backtranslator": self.backtranslator.name,
                "refusal": who(self.refusal), "inferred_refusal": who(self.inferred_refusal)}

    # ------------------------------------------------------------------ scorers
    def _make_scorer(self, scorer: Any) -> Callable[[list[str], list[str]], list[float]] | None:
        if callable(scorer):
            return scorer
        if scorer == "judge":
            return self._judge_scores
        if scorer != "loglik":
            raise ValueError(f"explain_scorer must be 'loglik', 'judge' or a callable, got {scorer!r}")
        b = self.backtranslator
        if b.capabilities.loglikelihood and getattr(b, "tokenizer", None) is not None:
            return self._loglik_scores
        if self.gamma == -math.inf:
            return None
        raise CapabilityError(
            f"the likelihood filter needs prompt log-probabilities, which the {b.capabilities.backend!r} "
            "backtranslator does not give. Pass gamma=float('-inf') to disable the filter, "
            "explain_scorer='judge' for an LLM judge, or a white-box backtranslator.")

    def _loglik_scores(self, requests: list[str], responses: list[str]) -> list[float]:
        tok = self.backtranslator.tokenizer
        pairs, counts = [], []
        for s, o in zip(requests, responses, strict=True):
            ids = tok(o, add_special_tokens=False)["input_ids"][: self.n_lik]
            pairs.append((s, tok.decode(ids) or o))
            counts.append(max(len(ids), 1))
        scores = self.backtranslator.loglikelihood(pairs, chat_template=False)
        return [lp / n for (lp, _), n in zip(scores, counts, strict=True)]

    def _judge_scores(self, requests: list[str], responses: list[str]) -> list[float]:
        """log P(yes) of "is O a direct answer to S'?"; NaN where the answer was neither yes nor no
        (invalid: the filter takes no decision on that sample)."""
        from trustlab.models.labels import label_logprobs

        asks = [EXPLAIN_TEMPLATE.format(request=s, response=o[:1500]) for s, o in zip(requests, responses, strict=True)]
        return [math.nan if d is None else d["yes"]
                for d in label_logprobs(self.backtranslator, asks, {"yes": ["yes"], "no": ["no"]}, on_invalid="none")]

    # ------------------------------------------------------------------ the defense
    def trace(
        self,
        prompts: Sequence[Prompt],
        config: GenerationConfig | None = None,
        *,
        chat_template: bool = True,
        full: bool = False,
        **overrides: Any,
    ) -> list[DefenseTrace]:
        """Run the defense and return one trace per sample (``n`` per prompt, prompt-major).

        Args:
            prompts: prompts S.
            config: decoding settings for O (keyword overrides apply).
            chat_template: as in :meth:`generate`.
            full: also compute ``l`` and ``O'`` where the decision does not need them, so that
                :meth:`decide` can replay other settings (other ``gamma``) without new model calls.
        """
        cfg = (config or self.default_config).updated(**overrides)
        t0 = time.perf_counter()
        prompts = list(prompts)
        gens = _generate_by_length(self.target, prompts, cfg, chat_template)
        first = (time.perf_counter() - t0) / (len(prompts) * cfg.n)
        texts = [plain_text(p) for p in prompts]
        traces = [DefenseTrace(prompt=texts[i], response=g.text, initial_refusal=False, response_seconds=first)
                  for i, row in enumerate(gens) for g in row]
        for t, r in zip(traces, self.refusal.detect([t.response for t in traces],
                                                    prompts=[t.prompt for t in traces]), strict=True):
            t.initial_refusal = bool(r)  # no decision (None): go on checking, as for no refusal
            if r is None:
                t.invalid_judgments.append("response")
        todo = [t for t in traces if not t.initial_refusal]
        if todo:
            asks = [BACKTRANSLATION_TEMPLATE.format(response=t.response.strip()) for t in todo]
            answers = _generate_by_length(self.backtranslator, asks, GenerationConfig(
                max_new_tokens=self.backtranslate_max_new_tokens), chat_template=True)
            for t, (a,) in zip(todo, answers, strict=True):
                t.backtranslation = a.text
                t.inferred_request, t.invalid_request = parse_inferred_request(a.text, self.parse,
                                                                               response=t.response)
                t.calls += 1
        todo = [t for t in todo if t.inferred_request]
        if todo and self.explain_scorer is not None and (full or self.gamma > -math.inf):
            scores = self.explain_scorer([t.inferred_request for t in todo], [t.response for t in todo])
            for t, s in zip(todo, scores, strict=True):
                t.calls += 1
                if math.isnan(s):  # the explain judge gave no decision: the filter does not apply
                    t.invalid_judgments.append("explain")
                else:
                    t.likelihood = float(s)
        if not full:
            todo = [t for t in todo if t.likelihood is None or t.likelihood > self.gamma]
        if todo:
            o_cfg = cfg.updated(n=1, temperature=0.0, logprobs=False,
                                max_new_tokens=self.inferred_max_new_tokens or cfg.max_new_tokens)
            again = _generate_by_length(self.target, [t.inferred_request for t in todo], o_cfg, chat_template)
            judged = self.inferred_refusal.detect([a.text for (a,) in again],
                                                  allow_clarification=self.allow_clarification,
                                                  prompts=[t.inferred_request for t in todo])
            for t, (a,), r in zip(todo, again, judged, strict=True):
                t.inferred_response, t.inferred_refusal = a.text, r
                t.calls += 1
                if r is None:
                    t.invalid_judgments.append("inferred_response")
        per = (time.perf_counter() - t0) / max(len(traces), 1)
        out = [self.decide(t) for t in traces]
        for t in out:
            t.seconds = per
        return out

    def decide(self, trace: DefenseTrace, gamma: float | None = None) -> DefenseTrace:
        """The decision for a computed trace under threshold ``gamma`` (default: this defense's).

        Pure: returns a copy with ``decision``, ``output``, ``refused`` and ``calls`` set as if the
        defense had run with that ``gamma`` (a filtered sample does not pay for O').

        Example:
            >>> [defense.decide(t, gamma=float("-inf")).refused for t in traces]
        """
        gamma = self.gamma if gamma is None else gamma
        t = replace(trace)
        lik_call = int((t.likelihood is not None or "explain" in t.invalid_judgments) and gamma > -math.inf)
        filtered = t.likelihood is not None and t.likelihood <= gamma
        if t.initial_refusal:
            t.decision, t.calls = "refused_initially", 1
        elif not t.inferred_request:
            t.decision, t.calls = "no_inferred_request", 2
        elif filtered:
            t.decision, t.calls = "filtered_unexplained", 2 + lik_call
        elif "inferred_response" in t.invalid_judgments:
            t.decision, t.calls = "no_refusal_judgment", 3 + lik_call
        elif t.inferred_refusal is None:
            raise ValueError("trace lacks O' for this gamma: recompute it with trace(..., full=True)")
        else:
            t.decision = "refused_backtranslated" if t.inferred_refusal else "passed"
            t.calls = 3 + lik_call
        t.refused = t.decision.startswith("refused")
        if t.refused:
            t.output = self.refusal_text
        elif t.decision == "passed" and self.return_new_response_anyway:
            t.output = t.inferred_response or ""
        else:
            t.output = t.response
        return t

    def _generate(self, prompts: list[Prompt], cfg: GenerationConfig, chat_template: bool) -> list[list[Generation]]:
        traces = self.trace(prompts, cfg, chat_template=chat_template)
        gens = [Generation(text=t.output, extra={"defense": t.to_dict()}) for t in traces]
        return [gens[i * cfg.n:(i + 1) * cfg.n] for i in range(len(prompts))]
