"""`pip install .` must give a service that starts: pyproject declares what the code imports."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
OWN = {"resizer", "settings"}


def declared() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {canonicalize_name(r.name): r for r in map(Requirement, project["dependencies"])}


def pinned() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = re.fullmatch(r"([A-Za-z0-9_.\[\]-]+)==(\S+)", line).groups()
            pins[canonicalize_name(name.split("[")[0])] = version
    return pins


def top_level_imports() -> dict[str, str]:
    """Every module the package (and settings.py) imports, anywhere in a file: name -> first file."""
    found: dict[str, str] = {}
    for path in sorted([*(ROOT / "resizer").rglob("*.py"), ROOT / "settings.py"]):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], str(path.relative_to(ROOT)))
    return {name: where for name, where in found.items()
            if name not in sys.stdlib_module_names and name not in OWN and name != "__future__"}


def with_their_requirements(names: set[str]) -> set[str]:
    """The distributions ``names`` bring in when installed (their own dependencies, recursively)."""
    seen, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for spec in metadata.requires(name) or []:
            requirement = Requirement(spec)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(canonicalize_name(requirement.name))
    return seen


def test_every_import_is_a_declared_dependency_or_comes_with_one():
    installed = with_their_requirements(set(declared()))
    distributions = metadata.packages_distributions()
    missing = {}
    for module, where in top_level_imports().items():
        providers = {canonicalize_name(d) for d in distributions.get(module, [])}
        assert providers, f"{module} (imported in {where}) is not installed at all"
        if not providers & installed:
            missing[module] = (where, sorted(providers))
    assert not missing, f"imported but not declared in pyproject.toml's dependencies: {missing}"


def test_pyproject_ranges_admit_the_pinned_versions():
    ranges, pins = declared(), pinned()
    assert set(ranges) == set(pins), "pyproject.toml and requirements.txt list different runtime packages"
    for name, requirement in ranges.items():
        assert requirement.specifier.contains(pins[name]), f"{name}=={pins[name]} is outside {requirement}"
