"""The method registry: every registered method is complete, and adding one needs no other file."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from trustlab import registry
from trustlab.cli import main
from trustlab.registry import (
    AREAS,
    METHOD_MODULES,
    PLANNED,
    MethodRecord,
    UnknownMethodError,
    all_methods,
    audit_sections,
    get_method,
    load_errors,
    register_method,
    reproductions,
    resolve,
)
from trustlab.report import Claim, write_summary

SPECS = Path(__file__).resolve().parents[1].parent / "shared" / "specs"
REGISTERED = [m for m in all_methods() if not m.planned]


@pytest.fixture
def scratch_registry(monkeypatch):
    """Records registered during the test disappear after it."""
    all_methods()  # discover first, so the copy holds every shipped record
    monkeypatch.setattr(registry, "_RECORDS", dict(registry._RECORDS))


def _check_signature(fn, positional: list[str], keyword: list[str]) -> None:
    """``fn(<positional>, *, <keyword>)``; any further parameter has a default."""
    assert callable(fn)
    params = list(inspect.signature(fn).parameters.values())
    n = len(positional) + len(keyword)
    assert [p.name for p in params[:n]] == positional + keyword, fn
    assert all(p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD for p in params[:len(positional)]), fn
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params[len(positional):n]), fn
    assert all(p.default is not inspect.Parameter.empty for p in params[n:]), fn


def test_every_method_module_loads_and_registers():
    assert load_errors() == {}
    assert len(REGISTERED) == len(METHOD_MODULES) >= 4
    assert {m.id for m in REGISTERED} >= {"lora-rite", "context-awareness", "clue", "backtranslation"}


def test_ids_sections_and_commands_are_unique():
    ids = [m.id for m in all_methods()]
    assert len(ids) == len(set(ids)) == len(REGISTERED) + len(PLANNED)
    assert not {p.id for p in PLANNED} & {m.id for m in REGISTERED}, "an implemented method is still listed as planned"
    sections = [m.section for m in audit_sections()]
    assert len(sections) == len(set(sections))
    paths = [p for m in all_methods() for p in m.cli]
    assert len(paths) == len(set(paths))
    from trustlab.cli import CORE

    assert not {p.split()[0] for p in paths if len(p.split()) == 1} & set(CORE)


@pytest.mark.parametrize("method", all_methods(), ids=lambda m: m.id)
def test_spec_exists(method):
    assert method.area in AREAS and method.title and method.spec.endswith(".md")
    if not SPECS.is_dir():
        pytest.skip(f"{SPECS} is not here; only the spec file check is skipped")
    assert (SPECS / method.spec).is_file(), f"{method.id}: no spec {SPECS / method.spec}"


@pytest.mark.parametrize("method", REGISTERED, ids=lambda m: m.id)
def test_entries_import_with_the_documented_signatures(method):
    assert method.reproduce or method.audit or method.cli, f"{method.id} is registered but has no entry"
    if method.reproduce:
        _check_signature(resolve(method.reproduce), ["out"], ["quick", "seed"])
    if method.audit:
        _check_signature(resolve(method.audit), ["model", "run"], ["quick", "seed"])
    for path, target in method.cli.items():
        cmd = resolve(target)
        assert isinstance(cmd, click.Command) and cmd.name == path.split()[-1], (path, target)
        # reachable from `trustlab`: every word but the last names a group of the command tree
        group, ctx = main, click.Context(main)
        for word in path.split()[:-1]:
            group = group.get_command(ctx, word)
            assert isinstance(group, click.Group), f"{method.id}: {path!r} has no parent group {word!r}"
        assert group.get_command(ctx, path.split()[-1]) is cmd


def test_records_import_without_torch_or_transformers():
    code = ("import sys; from trustlab.registry import all_methods, load_errors; all_methods(); "
            "from click.testing import CliRunner; from trustlab.cli import main; "
            "r = CliRunner().invoke(main, ['--help']); assert r.exit_code == 0, r.output; "
            "print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules), load_errors())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[] {}"


def test_lookups_and_unknown_names():
    assert get_method("clue").title == "CLUE concept-level uncertainty"
    assert get_method("mossbench").section == "oversensitivity" and get_method("mossbench").reproduce
    assert get_method("lfr").reproduce and "pretrain" in get_method("lfr").cli
    assert [m.id for m in reproductions()] == [m.id for m in REGISTERED if m.reproduce]
    with pytest.raises(UnknownMethodError, match="choose one of: lora-rite"):
        get_method("no-such-method")
    assert [AREAS.index(m.area) for m in all_methods()] == sorted(AREAS.index(m.area) for m in all_methods())


def test_bad_records_are_refused(scratch_registry):
    base = dict(id="x-method", title="X", spec="x.md")
    with pytest.raises(ValueError, match="area"):
        register_method(**base, area="magic")
    with pytest.raises(ValueError, match="module:attr"):
        register_method(**base, area="defend", audit="no_colon_here")
    with pytest.raises(ValueError, match="planned"):
        MethodRecord(**base, area="defend", reproduce="m:f", planned=True)
    with pytest.raises(ValueError, match="already belongs to 'context-awareness'"):
        register_method(**base, area="defend", audit="m:f", section="context")
    register_method(**base, area="defend")
    register_method(**base, area="defend")  # the same record again (a re-import) is fine
    with pytest.raises(ValueError, match="already registered"):
        register_method(**base, area="train")


# A throwaway method, as a new method's package would declare it: a real (tiny) reproduction, an audit
# section and a command, all found through the one record.
def throwaway_reproduce(out: Path, *, quick: bool = False, seed: int = 0) -> list[Claim]:
    claim = Claim("throwaway", "two is more than one", "value", 2.0, 1.0, "one", True,
                  {"model": "none", "quick": quick, "seed": seed}, n=1)
    write_summary(out, [claim])
    return [claim]


def throwaway_audit(model, run, *, quick: bool, seed: int):
    from trustlab.report import Section

    return [Section("Throwaway section", f"audited {model.name}")]


@click.command("throwaway")
@click.option("--word", default="hello")
def throwaway_command(word: str) -> None:
    """Say a word (the throwaway method's command)."""
    click.echo(f"throwaway says {word}")


def _register_throwaway(**extra):
    return register_method(id="throwaway", title="Throwaway method for the registry test", area="explain",
                           spec="throwaway.md", reproduce="tests.test_registry:throwaway_reproduce",
                           audit="tests.test_registry:throwaway_audit", section="throwaway-section",
                           cli={"eval throwaway": "tests.test_registry:throwaway_command"}, **extra)


def test_a_method_registered_at_run_time_appears_everywhere(scratch_registry, tmp_path, monkeypatch):
    _register_throwaway()
    runner = CliRunner()
    res = runner.invoke(main, ["reproduce", "--help"])
    assert "throwaway" in res.output and "Throwaway method for the registry test" in res.output
    res = runner.invoke(main, ["audit", "--help"])
    assert "throwaway-section" in res.output
    res = runner.invoke(main, ["eval", "--help"])
    assert "throwaway" in res.output and "Say a word" in res.output
    res = runner.invoke(main, ["eval", "throwaway", "--word", "hi"])
    assert res.exit_code == 0 and res.output == "throwaway says hi\n"
    from trustlab.report.table import method_table

    assert "Throwaway method for the registry test" in method_table(tmp_path / "results")
    # `reproduce --quick` runs it into runs/reproduce/<id>, never results/
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(main, ["reproduce", "throwaway", "--quick"])
    assert res.exit_code == 0, res.output
    assert "[reproduced] two is more than one" in res.output
    summary = json.loads((tmp_path / "runs" / "reproduce" / "throwaway" / "summary.json").read_text())
    summary = summary if isinstance(summary, list) else [summary]
    assert summary[0]["setup"]["quick"] is True and not (tmp_path / "results").exists()
    res = runner.invoke(main, ["reproduce", "throwaway", "--quick", "--out", "results/throwaway"])
    assert res.exit_code == 2 and "a quick run is a smoke test" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "results").exists()  # refused before running


def test_a_command_that_cannot_import_does_not_break_the_others(scratch_registry):
    register_method(id="ghost", title="Ghost", area="explain", spec="ghost.md",
                    cli={"eval ghost": "no_such_module_for_trustlab:command"})
    runner = CliRunner()
    res = runner.invoke(main, ["eval", "--help"])
    assert res.exit_code == 0 and "ghost" in res.output and "unavailable" in res.output
    assert "context" in res.output
    res = runner.invoke(main, ["eval", "ghost", "--anything"])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert "cannot be loaded (no_such_module_for_trustlab:command)" in res.output
    assert runner.invoke(main, ["models", "--json"]).exit_code == 0


def test_a_record_module_that_cannot_import_is_named_not_hidden(scratch_registry, monkeypatch):
    monkeypatch.setattr(registry, "METHOD_MODULES", (*METHOD_MODULES, "trustlab.no_such_area.method"))
    monkeypatch.setattr(registry, "_LOAD_ERRORS", {})
    monkeypatch.setattr(registry, "_discovered", False)
    assert {m.id for m in all_methods()} >= {m.id for m in REGISTERED}  # the others still load
    assert "trustlab.no_such_area.method" in load_errors()
    with pytest.raises(UnknownMethodError, match="not loaded: trustlab.no_such_area.method"):
        get_method("no-such-area-method")
    res = CliRunner().invoke(main, ["results", "table"])
    assert res.exit_code == 2 and "could not be imported, so the table would omit them" in res.output
    assert CliRunner().invoke(main, ["reproduce", "--help"]).exit_code == 0
