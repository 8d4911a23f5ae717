"""The per-stage conda environments (envs/*.yaml, for --software-deployment-method conda) are usable:
every rule names one, each pins exactly constraints.txt's versions, each holds every third-party
package its rules' code imports, and the scripts find tessera from the checkout without installing it.

No conda runs here (nothing may be downloaded in tests); these checks are what can fail offline.
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from conftest import REPO

RULE = re.compile(r"^rule (\w+):", re.M)


def constraints() -> dict[str, str]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version.strip()
    return pins


def env_pins(path: Path) -> tuple[dict, dict[str, str]]:
    """(conda dependencies other than pip's list, pip pins name → version) of an env file."""
    env = yaml.safe_load(path.read_text())
    conda, pins = {}, {}
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            for req in dep["pip"]:
                name, version = req.split("==")
                pins[canonicalize_name(name)] = version
        else:
            name, _, version = dep.partition("=")
            conda[name] = version
    return conda, pins


def rules_with_env_and_script() -> dict[str, tuple[Path, Path]]:
    """rule → (env file, script) from rules/*.smk."""
    out = {}
    for smk in sorted((REPO / "rules").glob("*.smk")):
        text = smk.read_text()
        starts = [(m.start(), m.group(1)) for m in RULE.finditer(text)] + [(len(text), None)]
        for (start, name), (end, _) in zip(starts, starts[1:]):
            body = text[start:end]
            env = re.search(r'conda:\s*\n\s*"([^"]+)"', body)
            script = re.search(r'script:\s*\n\s*"([^"]+)"', body)
            assert env, f"rule {name} ({smk.name}) has no conda: environment"
            assert script, f"rule {name} ({smk.name}) has no script:"
            out[name] = ((smk.parent / env[1]).resolve(), (smk.parent / script[1]).resolve())
    return out


def test_every_rule_names_an_env_that_pins_exactly_the_constraints():
    pins = constraints()
    rules = rules_with_env_and_script()
    assert len(rules) >= 18
    for rule, (env, _) in rules.items():
        assert env.is_file(), f"rule {rule}: {env} is missing"
    for env in sorted((REPO / "envs").glob("*.yaml")):
        conda, pip = env_pins(env)
        assert conda.get("python") == "3.11", env.name
        assert pip, env.name
        wrong = {n: (v, pins.get(n)) for n, v in pip.items() if pins.get(n) != v}
        assert wrong == {}, f"{env.name}: pins that differ from constraints.txt (env, constraints): {wrong}"
    used = {env for env, _ in rules.values()}
    assert used == set((REPO / "envs").glob("*.yaml")), "an env file no rule uses"


def third_party_imports(script: Path) -> set[str]:
    """Top-level names of the non-stdlib modules a script imports, following tessera's own modules
    (imports inside functions included: a lazy import still has to be in the environment)."""
    seen, todo, found = set(), [script], set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level:
                base = path.parent
                for _ in range(node.level - 1):
                    base = base.parent
                names = [".".join(base.relative_to(REPO / "src").parts + ((node.module,) if node.module else ()))]
            for name in names:
                top = name.split(".")[0]
                if top == "tessera":
                    module = REPO / "src" / Path(*name.split("."))
                    for candidate in (module.with_suffix(".py"), module / "__init__.py"):
                        if candidate.is_file():
                            todo.append(candidate)
                    # a parent package's __init__ runs too
                    for i in range(1, len(name.split("."))):
                        init = REPO / "src" / Path(*name.split(".")[:i]) / "__init__.py"
                        if init.is_file():
                            todo.append(init)
                elif top not in sys.stdlib_module_names and top not in ("_workflow_src", "__future__"):
                    found.add(top)
    return found


def closure(pins: dict[str, str]) -> set[str]:
    """The env's packages and, transitively, what they require (as installed here, extras excluded)."""
    out, todo = set(), list(pins)
    while todo:
        name = todo.pop()
        if name in out:
            continue
        out.add(name)
        try:
            requires = md.requires(name) or []
        except md.PackageNotFoundError:
            continue
        for req in map(Requirement, requires):
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(canonicalize_name(req.name))
    return out


def test_every_env_holds_what_its_rules_import():
    dists = md.packages_distributions()
    problems = []
    for rule, (env, script) in sorted(rules_with_env_and_script().items()):
        available = closure(env_pins(env)[1])
        for module in sorted(third_party_imports(script)):
            providers = {canonicalize_name(d) for d in dists.get(module, [])}
            assert providers, f"rule {rule}: no installed distribution provides '{module}'"
            if not providers & available:
                problems.append(f"{rule} ({env.name}): imports {module} ({', '.join(sorted(providers))})")
    assert problems == []


def test_scripts_import_tessera_from_the_checkout_without_an_installed_tessera():
    for script in sorted((REPO / "scripts").glob("*.py")):
        if script.name == "_workflow_src.py":
            continue
        imports = [n for n in ast.parse(script.read_text()).body if isinstance(n, (ast.Import, ast.ImportFrom))]
        first = imports[0]
        assert isinstance(first, ast.Import) and first.names[0].name == "_workflow_src", \
            f"{script.name}: import _workflow_src before anything else"
    # an interpreter without site-packages (like a fresh conda env without tessera) finds the checkout's
    probe = "import sys; sys.path.append(sys.argv[1]); import _workflow_src, tessera; print(tessera.__file__)"
    out = subprocess.run([sys.executable, "-I", "-S", "-c", probe, str(REPO / "scripts")], capture_output=True,
                         text=True, check=True).stdout.strip()
    assert Path(out) == REPO / "src" / "tessera" / "__init__.py"
    with pytest.raises(subprocess.CalledProcessError):  # and without the helper it would not
        subprocess.run([sys.executable, "-I", "-S", "-c", "import tessera"], capture_output=True, check=True,
                       cwd="/")
