"""The tree shows the architecture: concepts are packages, data flows one way, no import cycles."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("orchestrator", "trainables", "search_spaces")
CONCEPT_PACKAGES = ("trainables/methods", "trainables/data", "trainables/evaluation",
                    "trainables/initializations", "orchestrator/report")


def imported_modules(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
    return modules


def test_no_prefix_named_files_remain_where_packages_stand() -> None:
    prefixed = [*ROOT.glob("trainables/data_*.py"), *ROOT.glob("trainables/eval_*.py"),
                *ROOT.glob("trainables/init_*.py"), *ROOT.glob("orchestrator/report_*.py")]
    assert prefixed == []


def test_each_concept_package_says_what_it_holds_and_how_to_add_to_it() -> None:
    for package in CONCEPT_PACKAGES:
        docstring = ast.get_docstring(ast.parse((ROOT / package / "__init__.py").read_text()))
        assert docstring and "add" in docstring.lower(), package


def test_nothing_below_trainables_imports_the_orchestrator() -> None:
    offenders = [str(path.relative_to(ROOT)) for path in ROOT.glob("trainables/**/*.py")
                 if any(module.split(".")[0] == "orchestrator" for module in imported_modules(path))]
    assert offenders == []


def test_every_module_imports_on_its_own() -> None:
    """A cycle shows up as an ImportError when the module inside it is imported first."""
    modules = sorted(
        ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for package in PACKAGES for path in (ROOT / package).rglob("*.py") if path.name != "__main__.py"
    )
    script = "import importlib, sys\nfor name in sys.argv[1:]:\n" \
             "    for loaded in [m for m in sys.modules if m.split('.')[0] in " + repr(PACKAGES) + "]:\n" \
             "        del sys.modules[loaded]\n    importlib.import_module(name)\n"
    completed = subprocess.run([sys.executable, "-c", script, *modules], cwd=ROOT, capture_output=True,
                               text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-2000:]
