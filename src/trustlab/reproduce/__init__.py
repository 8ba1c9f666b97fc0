"""``trustlab reproduce <method>``: each method record's ``reproduce`` entry (:mod:`trustlab.registry`) is
``run(out: Path, *, quick: bool = False, seed: int = 0, **options) -> list[Claim]``, which re-runs the
spec's small-scale reproduction and writes ``out/summary.json`` plus detailed JSON and plots.

Full runs write ``results/<method>`` (the committed numbers); quick runs write ``runs/reproduce/<method>``,
never ``results/``.

Methods with roles take one model spec per role as keyword options of ``run`` (default None: the model
under test, itself the embedded SmolLM2 by default), e.g. CLUE has ``model`` (answers), ``extractor_model``
and ``nli_model``; backtranslation has ``model`` (the target), ``backtranslator_model`` and
``judge_model``. Which options a method takes is read from its ``run`` signature (:func:`run_options`),
so an option given to a method without it is refused by name. A run with a role model other than the
default writes beside the default one, ``results/<method>--<slug>/`` (:func:`default_out`), so results
for several models sit side by side and the README table shows one row per (method, models).
"""

from __future__ import annotations

import inspect
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from trustlab.errors import ModelSpecError, TrustlabError
from trustlab.registry import get_reproduction, resolve
from trustlab.report.schema import Claim, under_results

DEFAULT_MODEL = "embedded"
DEFAULT_SLUG = "smollm2-135m"
_DEFAULT_SPECS = (DEFAULT_MODEL, f"embedded:{DEFAULT_SLUG}")
_COMMON = ("quick", "seed")


def model_slug(spec: Any) -> str:
    """A folder-name form of a model spec or handle: lower case, ``embedded:`` and URL schemes dropped.

    Example:
        >>> model_slug("embedded:qwen2.5-coder-1.5b"), model_slug("Qwen/Qwen2.5-0.5B-Instruct")
        ('qwen2.5-coder-1.5b', 'qwen-qwen2.5-0.5b-instruct')
        >>> model_slug("openai:http://127.0.0.1:8080/v1"), model_slug("embedded")
        ('openai-127.0.0.1-8080-v1', 'smollm2-135m')
    """
    if is_default_model(spec):
        return DEFAULT_SLUG
    text = str(getattr(spec, "name", spec)).strip().lower()
    text = re.sub(r"^embedded:", "", text)
    text = re.sub(r"^openai:[a-z]+://", "openai-", text)
    return re.sub(r"[^a-z0-9.]+", "-", text).strip("-.") or "model"


def is_default_model(spec: Any) -> bool:
    """Whether a spec names the default model under test, the embedded SmolLM2 (None, ``"embedded"`` or
    ``"embedded:smollm2-135m"``)."""
    return spec is None or (isinstance(spec, str) and spec.strip() in _DEFAULT_SPECS)


def role_name(option: str) -> str:
    """The role an option of ``run`` fills: ``"judge_model"`` -> ``"judge"``, ``"model"`` -> ``"model"``."""
    return option[: -len("_model")] if option.endswith("_model") else option


def default_out(method: str, *, quick: bool, options: Mapping[str, Any] | None = None) -> Path:
    """Where a reproduction writes unless told: ``runs/reproduce/<method>`` when quick, else
    ``results/<method>``; with role models other than the default, ``<method>--<slug>`` beside it, where
    the slug names the model under test and each other role that differs from it.

    Example:
        >>> default_out("clue", quick=True)
        PosixPath('runs/reproduce/clue')
        >>> default_out("clue", quick=False, options={"model": "embedded:qwen2.5-coder-1.5b"})
        PosixPath('results/clue--qwen2.5-coder-1.5b')
        >>> default_out("backtranslation", quick=False, options={"judge_model": "embedded:gemma-3-270m"})
        PosixPath('results/backtranslation--smollm2-135m__judge-gemma-3-270m')
    """
    roles = {k: v for k, v in (options or {}).items() if k.endswith("model") and v is not None}
    main = roles.pop("model", DEFAULT_MODEL)
    others = [f"{role_name(k)}-{model_slug(v)}" for k, v in sorted(roles.items())
              if model_slug(v) != model_slug(main)]
    name = method
    if not is_default_model(main) or others:
        name += "--" + "__".join([model_slug(main), *others])
    return Path("runs", "reproduce", name) if quick else Path("results", name)


def run_options(method: str) -> list[str]:
    """The options (besides ``quick`` and ``seed``) that ``method``'s ``run`` accepts, e.g. its role models
    (the options ending in ``model``).

    Example:
        >>> run_options("clue")
        ['model', 'extractor_model', 'nli_model']
    """
    params = inspect.signature(resolve(get_reproduction(method).reproduce)).parameters.values()
    return [p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in _COMMON]


def run_reproduction(method: str, out: str | Path | None = None, *, quick: bool = False,
                     seed: int = 0, **options: Any) -> list[Claim]:
    """Run the reproduction of ``method`` into ``out`` (default: :func:`default_out`).

    Args:
        method: a method id with a reproduction.
        out: the output folder.
        quick: a smoke-test run (never under ``results/``).
        seed: the random seed.
        **options: options of the method's ``run`` (:func:`run_options`), e.g. role model specs
            ``model="embedded:qwen2.5-coder-1.5b"``, ``judge_model=...``; None values are left out.

    Raises:
        UnknownMethodError: no registered method with a reproduction has this id.
        TrustlabError: a quick run aimed at ``results/``, or an option the method does not take (refused
            before it runs, not after).

    Example:
        >>> claims = run_reproduction("lora-rite", quick=True)   # writes runs/reproduce/lora-rite/
        >>> claims = run_reproduction("clue", nli_model="embedded:qwen2.5-coder-1.5b")  # results/clue--smollm2-135m__nli-...
    """
    record = get_reproduction(method)
    options = {k: v for k, v in options.items() if v is not None}
    known = run_options(method)
    unknown = [k for k in options if k not in known]
    if unknown:
        takes = ", ".join(known) if known else "none"
        raise TrustlabError(f"the {method} reproduction has no option {', '.join(unknown)} (its options: {takes}); "
                            "a role model applies only to the methods with that role")
    out = Path(out) if out else default_out(method, quick=quick, options=options)
    if quick and under_results(out):  # write_summary would refuse it at the end of the run
        raise TrustlabError(f"a quick run is a smoke test, not the committed numbers: write it outside results/ "
                            f"(not {out}), e.g. the default {default_out(method, quick=True, options=options)}")
    return resolve(record.reproduce)(out, quick=quick, seed=seed, **options)


class RoleModelError(ModelSpecError):
    """A role's model spec that names no loadable model; :attr:`role` says which role."""

    def __init__(self, role: str, message: str):
        super().__init__(message)
        self.role = role


def load_roles(specs: Mapping[str, Any], *, hf_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One model handle per role, each spec loaded once.

    ``specs["model"]`` is the model under test (None: the embedded SmolLM2); every other role left None
    is the model under test itself, and roles naming the same spec share one handle. A spec may also be
    an already-loaded handle.

    Args:
        specs: role -> :func:`trustlab.models.load_model` spec, handle or None, e.g.
            ``{"model": None, "judge": "embedded:qwen2.5-coder-1.5b"}``.
        hf_options: load options for Hugging Face specs (``attn_implementation``, ``batch_size`` ...);
            not sent to ``openai:`` endpoints, which take none of them.

    Raises:
        RoleModelError: a spec names nothing loadable (the message names the role).

    Example:
        >>> roles = load_roles({"model": None, "nli": "embedded:qwen2.5-coder-1.5b", "extractor": None})
        >>> roles["extractor"] is roles["model"], roles["nli"].name
        (True, 'embedded:Qwen2.5-Coder-1.5B-Instruct')
    """
    from trustlab.models import load_model

    cache: dict[Any, Any] = {}

    def load(role: str, spec: Any) -> Any:
        spec = DEFAULT_MODEL if spec is None else spec
        key = os.fspath(spec).strip() if isinstance(spec, (str, os.PathLike)) else id(spec)
        if key not in cache:
            opts = dict(hf_options or {}) if isinstance(key, str) and not key.startswith("openai:") else {}
            try:
                cache[key] = load_model(spec, **opts)
            except ModelSpecError as exc:
                raise RoleModelError(role, f"the {role} model: {exc}") from exc
        return cache[key]

    out = {"model": load("model", specs.get("model"))}
    for role, spec in specs.items():
        if role != "model":
            out[role] = out["model"] if spec is None else load(role, spec)
    return out


def role_setup(roles: Mapping[str, Any]) -> tuple[dict[str, str], dict[str, Any]]:
    """The names of the role models (for each claim's ``setup["roles"]``, read by the README table) and
    their full descriptions (for the run's config, so a changed role is a new run).

    Example:
        >>> names, described = role_setup(load_roles({"model": None, "judge": None}))
        >>> names
        {'model': 'embedded:SmolLM2-135M-Instruct', 'judge': 'embedded:SmolLM2-135M-Instruct'}
    """
    return ({role: m.name for role, m in roles.items()}, {role: m.describe() for role, m in roles.items()})
