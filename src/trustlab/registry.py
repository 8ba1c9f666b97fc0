"""One record per method: what the CLI, ``trustlab audit``, ``trustlab reproduce`` and the README table read.

A method declares itself once, at the end of a small ``method.py`` in its own package (PEFT-style, like
peft's ``register_peft_method``)::

    register_method(
        id="clue", title="CLUE concept-level uncertainty", area="defend", spec="clue.md",
        reproduce="trustlab.reproduce.clue:run",            # run(out, *, quick, seed) -> list[Claim]
        audit="trustlab.uncertainty.audit:run", section="uncertainty",  # run(model, run, *, quick, seed)
        cli={"uncertainty": "trustlab.cli.uncertainty:uncertainty"},     # command path -> click command
    )

and adds one line to :data:`METHOD_MODULES`. Everything else (the command tree, ``reproduce --help``,
the audit's section list, the README table) follows from the record. Entries are ``"module:attr"`` import
paths, imported only when used, so ``trustlab --help`` stays fast and a method whose optional extra is
absent does not break the others. Record modules import nothing but this module (and their package's
light ``__init__``).

Example:
    >>> from trustlab.registry import all_methods, get_method
    >>> get_method("clue").section
    'uncertainty'
    >>> [m.id for m in all_methods() if m.reproduce][:4]
    ['lora-rite', 'lfr', 'mix-cd', 'context-awareness']
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from trustlab.errors import TrustlabError

AREAS = ("train", "steer", "defend", "explain")

# The single registry line per implemented method: the module whose import registers its record.
METHOD_MODULES: tuple[str, ...] = (
    "trustlab.optim.method",
    "trustlab.context.method",
    "trustlab.uncertainty.method",
    "trustlab.safety.method",
    "trustlab.prompting.method",
    "trustlab.prompting.mop_method",
    "trustlab.prompting.dpo_diff_method",
    "trustlab.data.lfr_method",
    "trustlab.data.mixcd_method",
    "trustlab.explain.method",
    "trustlab.attribution.method",
    "trustlab.programs.method",
    "trustlab.safety.mossbench_method",
    "trustlab.forensics.method",
)


class UnknownMethodError(TrustlabError, LookupError):
    """A method id or audit section name that no registered record has."""


@dataclass(frozen=True)
class MethodRecord:
    """Everything trustlab needs to know about one method.

    Attributes:
        id: short stable name (``results/<id>/``, ``trustlab reproduce <id>``), e.g. ``"clue"``.
        title: one line for tables and help, e.g. ``"CLUE concept-level uncertainty"``.
        area: one of :data:`AREAS` (``train``, ``steer``, ``defend``, ``explain``).
        spec: the spec's file name in the shared specs folder, e.g. ``"clue.md"``.
        reproduce: ``"module:function"`` with ``function(out: Path, *, quick: bool, seed: int) -> list[Claim]``
            that re-runs the small-scale reproduction into ``out``; None if there is none yet.
        audit: ``"module:function"`` with ``function(model, run: RunFolder, *, quick: bool, seed: int[, roles]
            [, scale]) -> list[Section | Concern]``, the method's ``trustlab audit`` section (report sections and
            its scorecard rows, :func:`trustlab.audit.scorecard.measure`); its module may define
            ``plan(model, *, quick, scale) -> trustlab.audit.plan.Cost``. None if it has none.
        section: the audit section's name for ``trustlab audit --section`` (default: ``id``).
        cli: command path (``"uncertainty"``, ``"eval context"``) -> ``"module:attr"`` of a click command
            whose name is the path's last word; the path's parent (``eval``) must be a group of the CLI.
        planned: True for a method listed in :data:`PLANNED` (no code yet; the README table says so).
    """

    id: str
    title: str
    area: str
    spec: str
    reproduce: str | None = None
    audit: str | None = None
    section: str | None = None
    cli: Mapping[str, str] = field(default_factory=dict)
    planned: bool = False

    def __post_init__(self) -> None:
        if self.area not in AREAS:
            raise ValueError(f"method {self.id!r}: area {self.area!r} is not one of {', '.join(AREAS)}")
        for target in (self.reproduce, self.audit, *self.cli.values()):
            if target is not None and target.count(":") != 1:
                raise ValueError(f"method {self.id!r}: {target!r} is not a 'module:attr' import path")
        if self.planned and (self.reproduce or self.audit or self.cli):
            raise ValueError(f"method {self.id!r}: a planned method has no entries yet")
        object.__setattr__(self, "cli", MappingProxyType(dict(self.cli)))
        if self.audit and self.section is None:
            object.__setattr__(self, "section", self.id)


def _planned(id: str, title: str, area: str, spec: str) -> MethodRecord:
    return MethodRecord(id, title, area, spec, planned=True)


# Methods with a spec but no code yet: the README table lists them as not yet implemented. Implementing one
# moves it from here to a record in its own package (plus its line in METHOD_MODULES).
PLANNED: tuple[MethodRecord, ...] = (
)

_RECORDS: dict[str, MethodRecord] = {}
_LOAD_ERRORS: dict[str, str] = {}
_discovered = False


def register_method(*, id: str, title: str, area: str, spec: str, reproduce: str | None = None,
                    audit: str | None = None, section: str | None = None,
                    cli: Mapping[str, str] | None = None) -> MethodRecord:
    """Register one method's record (call it once, at the end of the method package's ``method.py``).

    Args:
        id, title, area, spec, reproduce, audit, section, cli: the :class:`MethodRecord` fields.

    Returns:
        The record.

    Raises:
        ValueError: another record already has this id, or this audit section name; or a field is invalid
            (an unknown area, an entry that is not ``"module:attr"``).

    Example:
        >>> register_method(id="my-method", title="My method", area="defend", spec="my-method.md",
        ...                 audit="my_pkg.audit:run").section
        'my-method'
    """
    record = MethodRecord(id=id, title=title, area=area, spec=spec, reproduce=reproduce, audit=audit,
                          section=section, cli=dict(cli or {}))
    old = _RECORDS.get(record.id)
    if old is not None and old != record:
        raise ValueError(f"method {record.id!r} is already registered with different fields")
    clash = [m.id for m in _RECORDS.values() if record.section and m.section == record.section and m.id != record.id]
    if clash:
        raise ValueError(f"method {record.id!r}: audit section {record.section!r} already belongs to {clash[0]!r}")
    _RECORDS[record.id] = record
    return record


def _discover() -> None:
    """Import every module in :data:`METHOD_MODULES` once; a module that fails to import is remembered."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    for name in METHOD_MODULES:
        try:
            importlib.import_module(name)
        except ImportError as exc:  # an absent extra must not hide the other methods
            _LOAD_ERRORS[name] = f"{type(exc).__name__}: {exc}"


def load_errors() -> dict[str, str]:
    """Record modules that could not be imported (module -> error); empty when every method loaded.

    Example:
        >>> load_errors()
        {}
    """
    _discover()
    return dict(_LOAD_ERRORS)


def all_methods() -> list[MethodRecord]:
    """Every method, registered and planned, grouped by :data:`AREAS` (registration order within an area).

    Example:
        >>> [m.id for m in all_methods()][:3]
        ['lora-rite', 'lfr', 'mix-cd']
    """
    _discover()
    records = list(_RECORDS.values()) + [p for p in PLANNED if p.id not in _RECORDS]
    return sorted(records, key=lambda m: AREAS.index(m.area))


def _unknown(what: str, name: str, known: list[str]) -> UnknownMethodError:
    msg = f"unknown {what} {name!r}; choose one of: {', '.join(known) or 'none yet'}"
    if _LOAD_ERRORS:
        msg += "; not loaded: " + "; ".join(f"{m} ({e})" for m, e in _LOAD_ERRORS.items())
    return UnknownMethodError(msg)


def get_method(method_id: str) -> MethodRecord:
    """The record of ``method_id`` (planned methods included).

    Raises:
        UnknownMethodError: no method has this id (the message lists the known ones).

    Example:
        >>> get_method("lora-rite").area
        'train'
    """
    for m in all_methods():
        if m.id == method_id:
            return m
    raise _unknown("method", method_id, [m.id for m in all_methods()])


def reproductions() -> list[MethodRecord]:
    """The methods that have a ``trustlab reproduce`` entry, in table order."""
    return [m for m in all_methods() if m.reproduce]


def get_reproduction(method_id: str) -> MethodRecord:
    """The record of a method with a reproduction; :class:`UnknownMethodError` names the available ones."""
    for m in reproductions():
        if m.id == method_id:
            return m
    raise _unknown("method", method_id, [m.id for m in reproductions()])


def audit_sections() -> list[MethodRecord]:
    """The methods that have a ``trustlab audit`` section, in report order."""
    return [m for m in all_methods() if m.audit]


def get_section(name: str) -> MethodRecord:
    """The record whose audit section is called ``name``; :class:`UnknownMethodError` lists the sections."""
    for m in audit_sections():
        if m.section == name:
            return m
    raise _unknown("audit section", name, [m.section or "" for m in audit_sections()])


def resolve(target: str) -> Any:
    """Import a ``"module:attr"`` entry of a record and return the attribute.

    Example:
        >>> resolve("trustlab.reproduce.clue:run").__name__
        'run'
    """
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)
