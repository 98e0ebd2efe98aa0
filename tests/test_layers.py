"""The layers import downwards only: the command line calls sweeps/ and runs/, sweeps/ calls runs/, runs/ calls
the library, and no library module imports runs/, sweeps/ or the command line (read from every module's source, imports inside functions included)."""

import ast
import pathlib

import backdoorlab

SRC = pathlib.Path(backdoorlab.__file__).parent
CLI = {"backdoorlab.cli", "backdoorlab.cli_evasion", "backdoorlab.cli_federated", "backdoorlab.cli_listing",
       "backdoorlab.cli_sweep", "backdoorlab.cli_transfer", "backdoorlab.demo"}


def module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: pathlib.Path) -> set[str]:
    """The absolute names of the modules ``path`` imports anywhere in its source."""
    return imported_by(path.read_text(), module_name(path), path.name == "__init__.py")


def imported_by(source: str, name: str, is_package: bool) -> set[str]:
    """The absolute names that the module ``name`` with this ``source`` imports (and the modules they are in)."""
    package = name if is_package else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                prefix = ".".join(base) + ("." + node.module if node.module else "")
            else:
                prefix = node.module
            found.add(prefix)
            found.update(f"{prefix}.{a.name}" for a in node.names)
    return found


def layer(module: str) -> str:
    if module in CLI or module == "backdoorlab.__main__":
        return "cli"
    if module == "backdoorlab.runs" or module.startswith("backdoorlab.runs."):
        return "runs"
    if module == "backdoorlab.sweeps" or module.startswith("backdoorlab.sweeps."):
        return "sweeps"
    return "library"


def test_no_module_imports_a_layer_above_it():
    rank = {"library": 0, "runs": 1, "sweeps": 2, "cli": 3}
    upward = []
    for path in sorted(SRC.rglob("*.py")):
        here = module_name(path)
        for target in imported(path):
            if target.startswith("backdoorlab") and rank[layer(target)] > rank[layer(here)]:
                upward.append(f"{here} imports {target}")
    assert upward == []


def test_the_layer_check_sees_an_upward_import():
    # the check itself must be able to fail: relative, absolute and in-function imports of runs/ are seen
    source = "from ..runs import repair_run\n\ndef f():\n    import backdoorlab.cli\n    from . import x\n"
    names = imported_by(source, "backdoorlab.defenses.fake", is_package=False)
    assert {"backdoorlab.runs", "backdoorlab.runs.repair_run", "backdoorlab.cli", "backdoorlab.defenses.x"} <= names
    assert layer("backdoorlab.runs.repair_run") == "runs" and layer("backdoorlab.cli") == "cli"
    assert layer("backdoorlab.defenses.repair") == "library"
