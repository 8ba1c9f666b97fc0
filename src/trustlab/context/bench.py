"""Context-awareness benchmark: NIH and context QA under no template / template / template + steering.

Every probe is one user-turn text. The conditions render it three ways: ``no_template`` (raw completion
input, followed by an answer cue), ``template`` (one user turn in the model's chat template, as shipped,
default system prompt included) and ``steered`` (the template plus :class:`UserSteering`). With
``indicator=" [IND]"`` the indicator is appended to the question, for models fine-tuned with it.
Greedy decoding throughout. Results are per-probe rows; :func:`summarise` pools them per condition.

Model output is untrusted data. An answer that repeats the prompt's fixed text (five or more consecutive
words of the instruction that the document or question does not contain) or only its format (``Question:``,
``Document:``, the ``Answer:`` cue) instead of answering is *invalid*: it is counted (``valid_rate``) and
never scored. A valid answer is scored on its text up to the first line where the model starts a new prompt
section (``Question:`` ...) or a chat turn (a ``<|user|>`` / ``<|assistant|>`` / ``<|system|>`` header, as a
base model tuned on a Zephyr-style template writes when it goes on with the conversation), after dropping a
restated ``Answer:`` cue at its start. An empty answer is a valid miss (the model chose to say nothing).
Resumed rows are checked and scored again from their stored answer, so every row follows the current rules.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from trustlab._compat import attention_weights
from trustlab.bench.context_qa import QA_INSTRUCTION, QAItem, exact_match, f1, follows_context, qa_prompt
from trustlab.bench.niah import INSTRUCTION, NEEDLES, Needle, build_context, niah_prompt, recall
from trustlab.context.spans import render_with_spans
from trustlab.context.steering import UserSteering
from trustlab.report import progress
from trustlab.validity import echoes_source

NO_TEMPLATE_CUE = "\nAnswer: "  # [recon]; without the trailing space SmolLM2 ends at once (see results)
_LEADING_CUE = re.compile(r"^\s*(?:answer\s*:\s*)+", re.IGNORECASE)
_NEW_SECTION = re.compile(r"(?:^|\n)\s*(?:question|document|answer)\s*:|<\|(?:user|assistant|system)\|>",
                          re.IGNORECASE)


@dataclass(frozen=True)
class Condition:
    """How a probe is shown to the model.

    Attributes:
        name: label in results and plots.
        chat_template: render with the chat template.
        alpha: steering strength (None: no steering).
        indicator: text appended to the question (e.g. ``" [IND]"``).
        cue: text after the probe when there is no chat template (default :data:`NO_TEMPLATE_CUE`).
    """

    name: str
    chat_template: bool = True
    alpha: float | None = None
    indicator: str = ""
    cue: str = NO_TEMPLATE_CUE


def conditions(alphas: Sequence[float] = (0.9,), indicator: str = "") -> list[Condition]:
    """``no_template``, ``template`` and one ``steered`` condition per alpha (plus ``+[IND]`` variants).

    Example:
        >>> [c.name for c in conditions((0.9,), indicator=" [IND]")]
        ['no_template', 'template', 'steered_0.9', 'template+[IND]', 'steered_0.9+[IND]']
    """
    out = [Condition("no_template", chat_template=False), Condition("template")]
    out += [Condition(f"steered_{a:g}", alpha=a) for a in alphas]
    if indicator:
        tag = indicator.strip()
        out += [Condition(f"template+{tag}", indicator=indicator)]
        out += [Condition(f"steered_{a:g}+{tag}", alpha=a, indicator=indicator) for a in alphas]
    return out


@dataclass
class Probe:
    """One question: the user-turn text builder and the scorer of an answer.

    Attributes:
        id: stable id (for resuming).
        task: ``"niah"`` or a QA dataset name.
        content: builds the user-turn text from an indicator string.
        score: maps an answer to a dict of metrics (higher is better).
        meta: anything to keep with the row (length, depth, needle ...).
        source: the prompt's fixed text (instruction, format words) that an answer must not echo.
        own: the probe's own text (document, question) that an answer may quote.
    """

    id: str
    task: str
    content: Callable[[str], str]
    score: Callable[[str], dict[str, float]]
    meta: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    own: str = ""


def check_answer(answer: str, probe: Probe) -> tuple[str, str | None]:
    """The part of an answer that is scored, and why the answer is invalid (None when it is valid).

    Example:
        >>> check_answer("Answer: Question: What is the code?", probe)
        ('', 'repeats the prompt format instead of answering')
        >>> check_answer("Answer: Lyon.\\nQuestion: next?", probe)
        ('Lyon.', None)
    """
    if echoes_source(answer, probe.source, min_words=5, unless_in=probe.own):
        return "", "echoes the instruction"
    body = _LEADING_CUE.sub("", answer)
    cut = _NEW_SECTION.search(body)
    scored = (body[: cut.start()] if cut else body).strip()
    if answer.strip() and not any(c.isalnum() for c in scored):
        return "", "repeats the prompt format instead of answering"
    return scored, None


def niah_probes(tokenizer: Any, lengths: Sequence[int], depths: Sequence[float],
                needles: Sequence[Needle] = NEEDLES[:1]) -> list[Probe]:
    """The NIH grid: one probe per (needle, context length in tokens, depth in [0, 1])."""
    probes = []
    for k, needle in enumerate(needles):
        for n in lengths:
            for d in depths:
                document = build_context(tokenizer, n, d, needle)

                def content(ind: str, doc: str = document, q: str = needle.question) -> str:
                    return niah_prompt(doc, q + ind)

                def score(answer: str, words: tuple[str, ...] = needle.words) -> dict[str, float]:
                    r = recall(answer, words)
                    return {"recall": r, "recall_error": 1.0 - r}

                probes.append(Probe(f"niah-{k}-{n}-{d:g}", "niah", content, score,
                                    {"needle": k, "length": n, "depth": d},
                                    source=f"{INSTRUCTION} Document: Question:", own=f"{document} {needle.question}"))
    return probes


def qa_probes(items: Sequence[QAItem], task: str = "counterfactual") -> list[Probe]:
    """Context-QA probes scored by EM, F1 and (for counterfactual items) whether the answer follows context."""
    probes = []
    for item in items:
        def score(answer: str, it: QAItem = item) -> dict[str, float]:
            row = {"em": exact_match(answer, it.answers), "f1": f1(answer, it.answers)}
            if it.memory_answer is not None:
                row["follows_context"] = follows_context(answer, it)
            return row

        probes.append(Probe(item.id, task, lambda ind, it=item: qa_prompt(it, ind), score,
                            source=QA_INSTRUCTION, own=f"{item.context} {item.question}"))
    return probes


def render(probe: Probe, condition: Condition) -> Any:
    """The prompt for ``generate``: a raw string (no template) or one user turn."""
    text = probe.content(condition.indicator)
    if not condition.chat_template:
        return text + condition.cue
    return [{"role": "user", "content": text}]


def run_probes(model: Any, probes: Sequence[Probe], conds: Sequence[Condition], *, run: Any = None,
               max_new_tokens: int = 48, batch_size: int = 4) -> list[dict[str, Any]]:
    """Answer every probe under every condition (greedy) and score the answers.

    Args:
        model: an ``HFModel`` (steered conditions need attentions).
        probes: from :func:`niah_probes` / :func:`qa_probes`.
        conds: from :func:`conditions`.
        run: a ``RunFolder`` keyed by ``id``: rows are appended to its samples.jsonl and rows already there
            (same id) are reused, so a killed run continues where it stopped.
        max_new_tokens: answer length (greedy).
        batch_size: prompts per generate call (similar lengths are batched together).

    Returns:
        One row per (probe, condition): ids, condition, meta, answer, ``valid`` (with ``invalid_reason``) and
        the metrics (None for an invalid answer).
    """
    done = {r["id"]: r for r in (run.samples() if run is not None else [])
            if str(r.get("id", "")).startswith("context/")}
    rows = []
    for cond in conds:
        key = {p.id: f"context/{p.task}/{cond.name}/{p.id}" for p in probes}
        rows += [{**done[key[p.id]], **_scored(done[key[p.id]]["answer"], p)} for p in probes if key[p.id] in done]
        todo = [p for p in probes if key[p.id] not in done]
        todo.sort(key=lambda p: len(p.content(cond.indicator)))
        chunks = [todo[i:i + batch_size] for i in range(0, len(todo), batch_size)]
        for chunk in progress(chunks, f"{cond.name}"):
            prompts = [render(p, cond) for p in chunk]
            if cond.alpha is None:
                outs = model.generate(prompts, chat_template=cond.chat_template, max_new_tokens=max_new_tokens)
            else:
                with UserSteering(model, alpha=cond.alpha):
                    outs = model.generate(prompts, chat_template=True, max_new_tokens=max_new_tokens)
            for p, out in zip(chunk, outs):
                row = {"id": key[p.id], "task": p.task, "probe": p.id, "condition": cond.name, **p.meta,
                       **_scored(out[0].text, p)}
                rows.append(row)
                if run is not None:
                    run.add_sample(row)
    return rows


def _scored(answer: str, probe: Probe) -> dict[str, Any]:
    """The answer, its checked and scored part, validity and metrics (None for an invalid answer)."""
    scored, reason = check_answer(answer, probe)
    metrics = probe.score(scored) if reason is None else dict.fromkeys(probe.score(""))
    return {"answer": answer, "scored_text": scored, "valid": reason is None, "invalid_reason": reason, **metrics}


METRICS = ("recall", "recall_error", "em", "f1", "follows_context")


def summarise(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per task and condition: the mean of every metric over the valid answers, ``n`` (answers),
    ``n_valid``, ``valid_rate`` and ``empty`` (valid answers with no text). A metric is None when no
    answer of the group is valid.

    Example:
        >>> summarise(rows)["niah"]["template"]
        {'recall': 0.9, 'recall_error': 0.1, 'n': 45, 'n_valid': 44, 'valid_rate': 0.978, 'empty': 0}
    """
    acc: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        acc[(r["task"], r["condition"])].append(r)
    out: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for (task, cond), group in acc.items():
        valid = [r for r in group if r.get("valid", True)]
        names = [m for m in METRICS if m in group[0]]
        stats = {m: sum(r[m] for r in valid) / len(valid) if valid else None for m in names}
        out[task][cond] = {**stats, "n": len(group), "n_valid": len(valid), "valid_rate": len(valid) / len(group),
                           "empty": sum(not r["answer"].strip() for r in valid)}
    return dict(out)


def paired(rows: Sequence[dict[str, Any]], task: str, metric: str, ours: str,
           baseline: str) -> tuple[list[str], list[float], list[float]]:
    """Probe ids and per-probe values of ``metric`` under two conditions, for the probes valid under both
    (the items of a paired bootstrap).

    Example:
        >>> ids, steered, plain = paired(rows, "niah", "recall_error", "steered_0.9", "template")
    """
    by: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for r in rows:
        if r["task"] == task and r["condition"] in (ours, baseline) and r.get("valid", True):
            by[r["probe"]][r["condition"]] = r
    ids = sorted(p for p, conds in by.items() if len(conds) == 2)
    return ids, [by[p][ours][metric] for p in ids], [by[p][baseline][metric] for p in ids]


def user_attention_mass(model: Any, texts: Sequence[str], *, chat_template: bool) -> float:
    """Mean attention mass from the last prompt token to the user-content tokens (all layers and heads).

    Only the last query row of each layer is kept (forward hooks on the attention modules, eager kernel),
    so long prompts do not materialise every attention map at once.

    Example:
        >>> user_attention_mass(model, ["Document: ... Question: ..."], chat_template=True)
    """
    import torch

    names = [n for n, m in model.model.named_modules()
             if type(m).__name__.endswith("Attention") and hasattr(m, "layer_idx")]
    masses: list[float] = []
    for text in texts:
        prompt = [{"role": "user", "content": text}] if chat_template else text + NO_TEMPLATE_CUE
        rendered = render_with_spans(model, prompt, chat_template)
        if chat_template:
            start, end = rendered.spans[0].tokens
        else:  # the content, without the answer cue
            enc = model.tokenizer(rendered.text, add_special_tokens=True, return_offsets_mapping=True)
            inside = [t for t, (s, e) in enumerate(enc["offset_mapping"]) if e > s and s < len(text)]
            start, end = inside[0], inside[-1] + 1
        rows: list[Any] = []

        def keep(module: Any, args: Any, output: Any, rows: list[Any] = rows) -> None:
            weights = attention_weights(output, "the user attention mass")
            rows.append(weights[0, :, -1, :].float())  # (H, T): the last prompt token's attention

        with model.using_attn_implementation("eager"), model.hooks({n: keep for n in names}):
            with torch.inference_mode():
                model.model(input_ids=torch.tensor([rendered.ids], device=model.device))
        masses.append(torch.stack(rows)[:, :, start:end].sum(-1).mean().item())
    return sum(masses) / len(masses)


def plot_niah(rows: Sequence[dict[str, Any]], title: str = "NIH recall error") -> Any:
    """One heatmap per condition: recall error by context length (rows) and needle depth (columns)."""
    from trustlab.report import plt

    pyplot = plt()
    niah = [r for r in rows if r["task"] == "niah" and r.get("valid", True)]
    conds = list(dict.fromkeys(r["condition"] for r in niah))
    lengths = sorted({r["length"] for r in niah})
    depths = sorted({r["depth"] for r in niah})
    fig, axes = pyplot.subplots(1, len(conds), figsize=(3.2 * len(conds), 0.5 * len(lengths) + 1.6),
                                squeeze=False)
    for ax, cond in zip(axes[0], conds):
        grid = [[0.0] * len(depths) for _ in lengths]
        for i, n in enumerate(lengths):
            for j, d in enumerate(depths):
                cell = [r["recall_error"] for r in niah if r["condition"] == cond and r["length"] == n
                        and r["depth"] == d]
                grid[i][j] = sum(cell) / len(cell) if cell else float("nan")
                ax.text(j, i, f"{grid[i][j]:.2f}", ha="center", va="center", fontsize=7)
        image = ax.imshow(grid, vmin=0, vmax=1, cmap="RdYlGn_r", aspect="auto")
        ax.set_xticks(range(len(depths)), [f"{d:.0%}" for d in depths], fontsize=7)
        ax.set_yticks(range(len(lengths)), [str(n) for n in lengths], fontsize=7)
        ax.set_xlabel("needle depth")
        ax.set_title(cond, fontsize=9)
    axes[0][0].set_ylabel("context tokens")
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label="recall error")
    fig.suptitle(title, fontsize=10, y=1.06)
    return fig
