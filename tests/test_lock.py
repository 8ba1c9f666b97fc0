"""The install lock: generated, parseable, and what this environment actually runs."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import lockfile  # noqa: E402

# The packages whose internals or numerics our tests pin down: a drift here means the environment is not
# the one CI tested.
CORE = ("transformers", "peft", "accelerate", "gguf", "llama-cpp-python", "numpy", "sentence-transformers")


def test_the_lock_pins_the_core_and_leaves_torch_to_install_sh():
    pins = lockfile.read_lock()
    assert all(name in pins for name in CORE)
    assert "torch" not in pins and "trustlab" not in pins
    assert not (set(pins) & lockfile.asset_names()), "hash-pinned assets belong to requirements/assets.txt"
    assert "torch==2.13.0" in (ROOT / "scripts" / "install.sh").read_text()


def test_this_environment_runs_the_locked_versions():
    pins = lockfile.read_lock()
    drift = {n: (pins[n], version(n)) for n in CORE if version(n).split("+")[0] != pins[n]}
    assert not drift, f"installed versions differ from requirements/constraints.txt: {drift}"


def test_the_lock_satisfies_pyproject_ranges():
    import tomllib
    from packaging.requirements import Requirement

    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in meta["dependencies"]]
    reqs += [Requirement(r) for extra in meta["optional-dependencies"].values() for r in extra
             if not r.startswith("trustlab")]
    pins = lockfile.read_lock()
    for req in reqs:
        name = lockfile.canonical(req.name)
        if name in pins:
            assert req.specifier.contains(pins[name], prereleases=True), f"lock {name}=={pins[name]} breaks {req}"


def test_canary_report_names_the_release_that_broke_a_test(tmp_path):
    log = tmp_path / "pytest.log"
    log.write_text("...\nFAILED tests/context/test_steering.py::test_kv_cache - IndexError: mask\n"
                   "ERROR tests/models/test_hf.py::test_x\n1 failed, 1 error in 3.0s\n")
    assert lockfile.failed_tests(log) == ["tests/context/test_steering.py::test_kv_cache",
                                          "tests/models/test_hf.py::test_x"]
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "lockfile.py"), "canary", str(log),
                          "--json", str(tmp_path / "c.json")], capture_output=True, text=True, check=True)
    assert "2 canary tests fail" in out.stdout and "test_kv_cache" in out.stdout
