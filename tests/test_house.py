"""House rules that review would otherwise have to catch: short functions, self-contained
test modules."""

import ast
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("compiler", "hw", "sim", "flexigan", "boards")
#: Longest function allowed in the package, in lines (docstring included).
MAX_FUNCTION_LINES = 120


def _functions(path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node.name, node.lineno, node.end_lineno - node.lineno + 1


@pytest.mark.parametrize("package", PACKAGES)
def test_no_function_is_longer_than_the_limit(package):
    long = [f"{path.relative_to(ROOT)}:{line} {name} ({lines} lines)"
            for path in sorted((ROOT / package).rglob("*.py"))
            for name, line, lines in _functions(path) if lines > MAX_FUNCTION_LINES]
    assert long == []


def test_no_test_module_imports_another():
    shared = {"tests.helpers", "tests.conftest", "tests.hw.streams", "tests.hw.amaranth_axi"}
    found = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and \
                    node.module.startswith("tests") and node.module not in shared:
                found.append(f"{path.relative_to(ROOT)}: from {node.module}")
            if isinstance(node, ast.Import):
                found += [f"{path.relative_to(ROOT)}: import {a.name}" for a in node.names
                          if a.name.startswith("tests") and a.name not in shared]
    assert found == []


def test_every_package_folder_is_installed():
    # pyproject.toml maps the top-level folders into the import package by hand: a new
    # subpackage missing from its list works in the editable install and not in a wheel.
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {name: ROOT / path for name, path in config["package-dir"].items()}
    found = {".".join((name, *init.parent.relative_to(folder).parts))
             for name, folder in folders.items() for init in folder.rglob("__init__.py")}
    assert len(found) > 8
    assert sorted(found - set(config["packages"])) == []
