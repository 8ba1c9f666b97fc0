"""Small-scale reproduction of LLM-based Symbolic Programs on SynTree (spec: lsp-ilbench.md, section 6).

One model handle runs the modules and (unless ``learner_model`` is given) writes the rules (``run(model=)``,
any :func:`trustlab.models.load_model` spec; default the embedded SmolLM2-135M-Instruct; the spec's model is
``embedded:qwen2.5-coder-0.5b``). Tasks: SynTree (:func:`trustlab.bench.ilbench.make_syntree`) of depth 2
and 3, 3 seeds each. Arms per (depth, seed), all learned on the training split only and scored on the test
split (greedy):

- ``lsp``: :class:`~trustlab.programs.lsp.LSP` with ``max_nodes = 4`` (the spec's experiment);
- ``rulesum``: one RuleSum node (``max_nodes = 1``) with as many rule candidates as fit LSP's learning-time
  calls of that unit (at most :data:`MAX_MATCHED`): the single prompt with the examples;
- ``ape``: APE from :mod:`trustlab.prompting.mop_baselines`, ``budget`` and ``num_samples`` set so its
  calls match LSP's (at most :data:`MAX_MATCHED` proposals);
- ``mop``: Mixture-of-Prompts at the APE arm's budget, in quick runs only (a full run on this 2-core CPU
  would take hours more; the arm is in :mod:`trustlab.programs.baselines` for users);
- references without model calls: the majority training label (the floor) and scikit-learn's
  ``DecisionTreeClassifier`` on one-hot attributes (an upper bound, as the spec asks).

Transfer: the LSP program learned with the model runs unchanged with ``transfer_model`` (default: SmolLM2
when the model is another one; else the first installed of ``embedded:qwen2.5-coder-0.5b``,
``embedded:gemma-3-270m``; else no transfer claim). Retained accuracy = transfer accuracy / own accuracy.

Pass conditions, fixed before running (spec section 6, and the decisions it leaves open):

- Claim per depth d: LSP's mean test accuracy over seeds is higher than *both* single-prompt baselines'
  (``rulesum`` and ``ape``) *and* LSP accuracy rises with nodes: the final program's mean test accuracy
  is higher than that of its first node alone (:meth:`~trustlab.programs.program.Program.prefix`).
  ``baseline`` is the better of the two; ``ci`` the paired bootstrap 95% interval over the pooled test
  items of accuracy(LSP) - accuracy(that baseline). The spec's rule is directional: the interval is
  reported, not required.
- Transfer claim: the spec sets no threshold; we pre-register "the transferred program is more accurate
  than the majority-label floor" (interval reported), and report retained accuracy.

Measurability, fixed before running: a claim is "not measurable" (never "reproduced") when (a) its
``valid_rate`` < 0.5: fewer than half of the outputs its arms rest on were valid (learner rules that parsed
into a rule naming a label; module and baseline answers that mapped to a label, see
:mod:`trustlab.programs.outputs`; APE proposals as :func:`trustlab.prompting.mop.clean_proposal` judges), or
(b) every arm is at the floor: no arm's mean accuracy exceeds the majority-label floor by more than
:data:`FLOOR_MARGIN` (2 points).

Runs checkpoint one row per (depth, seed, arm) (ids ``d<depth>/s<seed>/<arm>``), seed by seed (both depths
of a seed first), rewrite the summary after each (depth, seed) unit (a partial run's claims name the seeds
they rest on), and resume.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from trustlab.report import Claim, RunFolder, plt, progress, write_json, write_summary

METHOD = "lsp"
MIN_VALID_RATE = 0.5
FLOOR_MARGIN = 0.02
MAX_MATCHED = 8
FULL = {"depths": [2, 3], "n_seeds": 3, "n_train": 120, "n_test": 100, "max_nodes": 4, "max_depth": 3,
        "n_rule_samples": 4, "n_validate": 24, "rulesum_batch": 24, "learner_max_new_tokens": 120,
        "answer_max_new_tokens": 8, "arms": ["lsp", "rulesum", "ape"]}
QUICK = {"depths": [2], "n_seeds": 1, "n_train": 16, "n_test": 8, "max_nodes": 2, "max_depth": 2,
         "n_rule_samples": 2, "n_validate": 6, "rulesum_batch": 8, "learner_max_new_tokens": 48,
         "answer_max_new_tokens": 6, "arms": ["lsp", "rulesum", "ape", "mop"]}
LSP_KEYS = ("max_nodes", "max_depth", "n_rule_samples", "n_validate", "rulesum_batch", "learner_max_new_tokens",
            "answer_max_new_tokens")


def _acc(correct: list[float]) -> float:
    return float(np.mean(correct)) if correct else float("nan")


def _references(task: Any) -> dict[str, Any]:
    """The majority-label floor and the one-hot decision tree upper bound (no model calls)."""
    from collections import Counter

    from sklearn.preprocessing import OneHotEncoder
    from sklearn.tree import DecisionTreeClassifier

    major = Counter(r["label"] for r in task.train).most_common(1)[0][0]
    enc = OneHotEncoder(handle_unknown="ignore").fit([list(r["attrs"].values()) for r in task.train])
    tree = DecisionTreeClassifier(random_state=0).fit(enc.transform([list(r["attrs"].values()) for r in task.train]),
                                                      [r["label"] for r in task.train])
    pred = tree.predict(enc.transform([list(r["attrs"].values()) for r in task.test]))
    return {"floor": [float(r["label"] == major) for r in task.test],
            "tree": [float(p == r["label"]) for p, r in zip(pred, task.test, strict=True)], "majority": major}


def _lsp_row(program: Any, test: list[dict[str, Any]], transfer: Any) -> dict[str, Any]:
    xs = [r["input"] for r in test]
    runner = program.runner()
    preds = program.predict_many(xs, runner=runner)
    correct = [float(p.label == r["label"]) for p, r in zip(preds, test, strict=True)]
    curve = []
    for k in range(1, program.n_nodes + 1):  # prefixes visit a subset of the full program's calls: cached
        sub = program.prefix(k).predict_many(xs, runner=runner)
        curve.append({"nodes": k, "test_accuracy": _acc([float(p.label == r["label"])
                                                         for p, r in zip(sub, test, strict=True)])})
    row = {"correct": correct, "accuracy": _acc(correct), "curve": curve, "n_nodes": program.n_nodes,
           "test_answers": runner.stats.to_dict(), "test_calls": runner.calls,
           "paths": [[s["node"] for s in p.trace] for p in preds[:20]]}
    if transfer is not None:
        t_runner = program.runner(transfer)
        moved = program.predict_many(xs, runner=t_runner)
        row["transfer"] = {"model": transfer.name, "correct": [float(p.label == r["label"])
                                                               for p, r in zip(moved, test, strict=True)],
                           "answers": t_runner.stats.to_dict()}
    return row


def _transfer_default(model_name: str) -> str | None:
    from trustlab.models.embedded import embedded_lm

    if "smollm2" not in model_name.lower():
        return "embedded"
    for key in ("qwen2.5-coder-0.5b", "gemma-3-270m"):
        if embedded_lm(key).installed:
            return f"embedded:{key}"
    return None


def _counts(*dicts: dict[str, Any] | None) -> dict[str, int]:
    """Valid and invalid outputs summed over validity dicts (``trustlab.validity`` form)."""
    return {"valid": sum(d["valid"] for d in dicts if d), "invalid": sum(d["invalid"] for d in dicts if d)}


def _rate(counts: dict[str, int]) -> float | None:
    total = counts["valid"] + counts["invalid"]
    return counts["valid"] / total if total else None


def summarise(rows: list[dict[str, Any]], depths: list[int]) -> dict[str, Any]:
    """Per depth and arm: mean accuracy over seeds, pooled correct items, calls, validity; the LSP curve."""
    by = {(r["depth"], r["seed"], r["arm"]): r for r in rows}
    out: dict[str, Any] = {}
    for d in depths:
        seeds = sorted({s for dd, s, a in by if dd == d and a == "lsp"})
        arms: dict[str, Any] = {}
        for arm in sorted({a for dd, _, a in by if dd == d}):
            got = [by[(d, s, arm)] for s in seeds if (d, s, arm) in by]
            if len(got) != len(seeds):
                continue
            arms[arm] = {"accuracy": float(np.mean([g["accuracy"] for g in got])),
                         "per_seed": [g["accuracy"] for g in got], "correct": [c for g in got for c in g["correct"]],
                         "learning_calls": float(np.mean([g.get("learning_calls", 0) for g in got])),
                         "validity": _counts(*[v for g in got for v in g.get("validity", [])])}
        lsp = [by[(d, s, "lsp")] for s in seeds]
        k_max = max((g["n_nodes"] for g in lsp), default=0)
        curve = [float(np.mean([g["curve"][min(k, g["n_nodes"]) - 1]["test_accuracy"] for g in lsp]))
                 for k in range(1, k_max + 1)]
        transfer = [g["transfer"] for g in lsp if "transfer" in g]
        out[str(d)] = {"seeds": seeds, "arms": arms, "nodes_curve": curve,
                       "n_nodes": [g["n_nodes"] for g in lsp],
                       "first_node_accuracy": float(np.mean([g["curve"][0]["test_accuracy"] for g in lsp])) if lsp
                       else None,
                       "transfer": {"model": transfer[0]["model"], "correct": [c for t in transfer for c in t["correct"]],
                                    "validity": _counts(*[t["answers"] for t in transfer])} if transfer else None}
    return out


def make_claims(details: dict[str, Any]) -> list[Claim]:
    """One claim per depth (LSP vs both single-prompt baselines, and accuracy rising with nodes) and the
    transfer claim, from ``details.json``."""
    from trustlab.report.stats import bootstrap_diff_ci

    setup, seed = details["setup"], details["setup"].get("seed", 0)
    claims = []
    transfers = []
    for d, res in details["depths"].items():
        arms = res["arms"]
        if not {"lsp", "rulesum", "ape", "floor"} <= set(arms):
            continue
        lsp = arms["lsp"]
        best = max(("rulesum", "ape"), key=lambda a: arms[a]["accuracy"])
        other = arms[best]
        valid = _rate(_counts(*[arms[a]["validity"] for a in ("lsp", "rulesum", "ape")]))
        why = []
        if valid is not None and valid < MIN_VALID_RATE:
            why.append(f"only {valid:.0%} of the model outputs were valid (< {MIN_VALID_RATE:.0%})")
        floor = arms["floor"]["accuracy"]
        if all(arms[a]["accuracy"] <= floor + FLOOR_MARGIN for a in ("lsp", "rulesum", "ape") if a in arms):
            why.append(f"every arm is at the majority-label floor ({floor:.2f} + {FLOOR_MARGIN})")
        rises = res["nodes_curve"][-1] > res["nodes_curve"][0] if len(res["nodes_curve"]) > 1 else False
        beats = lsp["accuracy"] > arms["rulesum"]["accuracy"] and lsp["accuracy"] > arms["ape"]["accuracy"]
        ci = bootstrap_diff_ci(lsp["correct"], other["correct"], seed=seed)
        note = (f"Depth {d}, seeds {res['seeds']}: LSP {lsp['accuracy']:.3f}, RuleSum (1 node, matched calls) "
                f"{arms['rulesum']['accuracy']:.3f}, APE {arms['ape']['accuracy']:.3f}"
                + (f", MoP {arms['mop']['accuracy']:.3f}" if "mop" in arms else "")
                + f"; majority floor {floor:.3f}, one-hot decision tree {arms['tree']['accuracy']:.3f}. LSP nodes "
                f"{res['n_nodes']}; test accuracy by nodes {[round(x, 3) for x in res['nodes_curve']]} "
                f"({'rises' if rises else 'does not rise'}). Learning calls per fit: LSP "
                f"{lsp['learning_calls']:.0f}, RuleSum {arms['rulesum']['learning_calls']:.0f}, APE "
                f"{arms['ape']['learning_calls']:.0f}.")
        if ci is not None and ci[0] <= 0 <= ci[1]:
            note += " The 95% interval includes zero: the spec's directional rule decides; not significant here."
        if why:
            note += " Not measurable: " + "; ".join(why) + "."
        claims.append(Claim(
            METHOD, f"LSP beats single-prompt learners (RuleSum, APE) on SynTree depth {d}, and its accuracy "
                    "rises with the number of nodes",
            "test accuracy, mean over seeds", lsp["accuracy"], other["accuracy"], best,
            not why and beats and rises, {**setup, "depth": int(d), "baseline": best}, note=note,
            n=len(lsp["correct"]), ci=ci, valid_rate=valid, measurable=not why))
        if res["transfer"]:
            transfers.append((d, res, floor))
    if transfers:
        moved = [c for _, r, _ in transfers for c in r["transfer"]["correct"]]
        own = [c for _, r, _ in transfers for c in r["arms"]["lsp"]["correct"]]
        floor_items = [c for _, r, _ in transfers for c in r["arms"]["floor"]["correct"]]
        valid = _rate(_counts(*[r["transfer"]["validity"] for _, r, _ in transfers]))
        acc_moved, acc_own, acc_floor = _acc(moved), _acc(own), _acc(floor_items)
        ci = bootstrap_diff_ci(moved, floor_items, seed=seed)
        why = []
        if valid is not None and valid < MIN_VALID_RATE:
            why.append(f"only {valid:.0%} of the transferred modules' answers mapped to a label")
        if max(acc_moved, acc_own) <= acc_floor + FLOOR_MARGIN:
            why.append("both models are at the majority-label floor")
        target = transfers[0][1]["transfer"]["model"]
        claims.append(Claim(
            METHOD, f"A program learned with one LLM transfers to another ({target}): it beats the majority floor",
            "test accuracy of the transferred program, pooled over depths and seeds", acc_moved, acc_floor,
            "majority training label", not why and ci is not None and acc_moved > acc_floor,
            {**setup, "transfer_model": target}, note=(
                f"Retained accuracy {acc_moved / acc_own if acc_own else float('nan'):.2f} (transferred "
                f"{acc_moved:.3f} / own {acc_own:.3f}); spec: report, no threshold." +
                (" Not measurable: " + "; ".join(why) + "." if why else "")),
            n=len(moved), ci=ci, valid_rate=valid, measurable=not why))
    return claims


def _plot(run_: RunFolder, details: dict[str, Any], model: str) -> Path:
    pyplot = plt()
    depths = list(details["depths"])
    fig, axes = pyplot.subplots(1, 2, figsize=(9.5, 3.2))
    arms = ["floor", "rulesum", "ape", "mop", "lsp", "tree"]
    for j, d in enumerate(depths):
        res = details["depths"][d]["arms"]
        shown = [a for a in arms if a in res]
        axes[0].bar(np.arange(len(shown)) + j * 0.4, [res[a]["accuracy"] for a in shown], 0.4, label=f"depth {d}")
        axes[0].set_xticks(np.arange(len(shown)) + 0.2, shown, fontsize=8)
        curve = details["depths"][d]["nodes_curve"]
        axes[1].plot(range(1, len(curve) + 1), curve, marker="o", label=f"depth {d}")
    axes[0].set_ylabel("test accuracy (mean over seeds)")
    axes[0].set_ylim(0, 1)
    axes[0].legend(fontsize=7)
    axes[1].xaxis.set_major_locator(pyplot.MaxNLocator(integer=True))
    axes[1].set_xlabel("LSP nodes (program prefix)")
    axes[1].set_ylabel("test accuracy")
    axes[1].set_ylim(0, 1)
    axes[1].legend(fontsize=7)
    fig.suptitle(f"LSP vs single prompts on SynTree, {model}", fontsize=9)
    return run_.save_plot(fig, "lsp_accuracy")


def run(out: Path, *, quick: bool = False, seed: int = 0, model: Any = None, learner_model: Any = None,
        transfer_model: Any = None) -> list[Claim]:
    """Run the reproduction into ``out`` (resuming a run with the same setup); returns the claims.

    Args:
        out: the output folder.
        quick: one tiny depth-2 task (a smoke test: :data:`QUICK` instead of :data:`FULL`).
        seed: the first task seed (seeds ``seed .. seed + n_seeds - 1``) and the bootstrap seed.
        model: module model (spec or handle; default None: the embedded SmolLM2).
        learner_model: the rule writer (default: ``model``).
        transfer_model: where the learned programs are also run (default: see the module docstring).

    Example:
        >>> run(Path("runs/reproduce/lsp"), quick=True)
        >>> run(Path("results/lsp--qwen2.5-coder-0.5b"), model="embedded:qwen2.5-coder-0.5b")
    """
    from trustlab.bench.ilbench import make_syntree
    from trustlab.programs.baselines import fit_single_prompt
    from trustlab.programs.lsp import LSP
    from trustlab.reproduce import load_roles, role_setup

    size = dict(QUICK if quick else FULL)
    roles = load_roles({"model": model, "learner": learner_model},
                       hf_options={"attn_implementation": "sdpa", "batch_size": 16})
    llm = roles["model"]
    target = transfer_model if transfer_model is not None else _transfer_default(llm.name)
    if target is not None:
        roles["transfer"] = load_roles({"model": target},
                                       hf_options={"attn_implementation": "sdpa", "batch_size": 16})["model"]
    names, described = role_setup(roles)
    seeds = list(range(seed, seed + size["n_seeds"]))
    setup = {"model": llm.name, "roles": names, "seeds": seeds, "seed": seed, "quick": quick,
             **{k: v for k, v in size.items() if k != "n_seeds"}}
    run_ = RunFolder(out, {"command": f"reproduce {METHOD}", **setup, "role_models": described})
    done = run_.done_keys()
    cfg = {k: size[k] for k in LSP_KEYS}
    units = [(d, s) for s in seeds for d in size["depths"]]  # seed-major: a partial run covers every depth
    claims: list[Claim] = []
    for depth, s in progress(units, "depth x seed"):
        key = f"d{depth}/s{s}"
        if all(f"{key}/{a}" in done for a in [*size["arms"], "floor", "tree"]):
            continue
        task = make_syntree(depth=depth, n_train=size["n_train"], n_test=size["n_test"], seed=s)
        xs, ys = [r["input"] for r in task.train], [r["label"] for r in task.train]
        base = {"depth": depth, "seed": s}
        rows = {r["arm"]: r for r in run_.samples() if r.get("depth") == depth and r.get("seed") == s}
        if "floor" not in rows:
            refs = _references(task)
            for arm in ("floor", "tree"):
                run_.add_sample({"id": f"{key}/{arm}", **base, "arm": arm, "correct": refs[arm],
                                 "accuracy": _acc(refs[arm]), "majority": refs["majority"]})
        if "lsp" not in rows:
            program = LSP(llm, roles["learner"], task.labels, seed=s, **cfg).fit(xs, ys)
            row = {"id": f"{key}/lsp", **base, "arm": "lsp", "program": program.to_json(), "text": program.to_text(),
                   "learning_calls": sum(program.info["calls"].values()),
                   **_lsp_row(program, task.test, roles.get("transfer"))}
            row["validity"] = [program.info["validity"], row["test_answers"]]
            rows["lsp"] = row
            run_.add_sample(row)
        matched = rows["lsp"]["learning_calls"]
        if "rulesum" in size["arms"] and "rulesum" not in rows:
            k = int(np.clip(matched // (1 + cfg["n_validate"]), cfg["n_rule_samples"], MAX_MATCHED))
            program = fit_single_prompt("rulesum", xs, ys, model=llm, learner=roles["learner"], n_rule_samples=k,
                                        seed=s, **{c: cfg[c] for c in LSP_KEYS if c not in ("max_nodes",
                                                                                           "n_rule_samples")})
            lrow = _lsp_row(program, task.test, None)
            run_.add_sample({"id": f"{key}/rulesum", **base, "arm": "rulesum", "n_rule_samples": k,
                             "program": program.to_json(), "learning_calls": sum(program.info["calls"].values()),
                             "correct": lrow["correct"], "accuracy": lrow["accuracy"],
                             "validity": [program.info["validity"], lrow["test_answers"]]})
        budget = int(np.clip(matched // (1 + cfg["n_validate"]), 2, MAX_MATCHED))
        for arm in ("ape", "mop"):
            if arm not in size["arms"] or arm in rows:
                continue
            fitted = fit_single_prompt(arm, xs, ys, model=llm, budget=budget, num_samples=cfg["n_validate"], seed=s,
                                       answer_max_new_tokens=cfg["answer_max_new_tokens"] + 8,
                                       **({"n_experts": 3} if arm == "mop" else {}))
            preds = fitted.predict_many([r["input"] for r in task.test])
            correct = [float(p == r["label"]) for p, r in zip(preds, task.test, strict=True)]
            run_.add_sample({"id": f"{key}/{arm}", **base, "arm": arm, "budget": budget, "correct": correct,
                             "accuracy": _acc(correct), "learning_calls": fitted.calls,
                             "prompt": fitted.describe(),
                             "validity": [fitted.fitted.info.get("search_validity") or fitted.fitted.info.get(
                                 "validity"), fitted.stats.to_dict()]})
        claims = _write(run_, out, size["depths"], setup, llm.name)  # after each unit: partial runs report too
    return claims or _write(run_, out, size["depths"], setup, llm.name)


def _write(run_: RunFolder, out: Path, depths: list[int], setup: dict[str, Any], model: str) -> list[Claim]:
    """details.json, results.json, the plot and summary.json from the rows written so far."""
    rows = sorted({r["id"]: r for r in run_.samples()}.values(), key=lambda r: r["id"])
    details = {"depths": summarise(rows, [d for d in depths if any(r["depth"] == d and r["arm"] == "lsp"
                                                                   for r in rows)]), "setup": setup}
    details["plot"] = _plot(run_, details, model).name
    write_json(Path(out) / "details.json", details)
    run_.write_results(details)
    claims = make_claims(details)
    write_summary(out, claims)
    return claims
