"""The tree shows the architecture: concepts are packages, data flows one way, no import cycles."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("orchestrator", "trainables", "search_spaces")
CONCEPT_PACKAGES = ("trainables/methods", "trainables/data", "trainables/evaluation",
                    "trainables/initializations", "trainables/backbones", "orchestrator/report")


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


def module_name(path: Path, root: Path = ROOT) -> str:
    return ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")


def import_graph(root: Path = ROOT, packages: tuple[str, ...] = PACKAGES) -> dict[str, set[str]]:
    """Project module -> the project modules importing it runs, counting imports inside functions.

    Importing a.b.c runs package a.b's __init__ (and a's) first, so those count too, except the
    importer's own packages: they are already being imported when it runs.
    """
    paths = {module_name(path, root): path for package in packages for path in (root / package).rglob("*.py")}
    graph = {}
    for name, path in paths.items():
        own_packages = {".".join(name.split(".")[:depth]) for depth in range(1, name.count(".") + 1)}
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
            else:
                continue
            for module in imported:
                parts = module.split(".")
                targets.update(".".join(parts[:depth]) for depth in range(1, len(parts) + 1))
        graph[name] = {target for target in targets if target in paths} - own_packages - {name}
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    lowest: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(node: str) -> None:
        index[node] = lowest[node] = len(index)
        stack.append(node)
        for successor in graph.get(node, ()):
            if successor not in index:
                visit(successor)
                lowest[node] = min(lowest[node], lowest[successor])
            elif successor in stack:
                lowest[node] = min(lowest[node], index[successor])
        if lowest[node] == index[node]:
            component = []
            while (member := stack.pop()) != node:
                component.append(member)
            component.append(node)
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(cycles)


def test_the_cycle_finder_finds_a_cycle_and_only_cycles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert import_cycles(graph) == [["a", "b", "c"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []


def test_a_cycle_closed_by_an_import_inside_a_function_is_found(tmp_path) -> None:
    package = tmp_path / "toy"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("from toy import c\n")
    (package / "sub" / "d.py").write_text("")
    (package / "a.py").write_text("import toy.b\n")
    (package / "b.py").write_text("def late():\n    from toy.a import name\n")
    (package / "c.py").write_text("def late():\n    import toy.sub.d\n")
    graph = import_graph(tmp_path, ("toy",))
    # Importing toy.sub.d runs toy.sub's __init__ first, which imports c back.
    assert graph["toy.c"] == {"toy.sub", "toy.sub.d"}
    assert import_cycles(graph) == [["toy.a", "toy.b"], ["toy.c", "toy.sub"]]
    (package / "b.py").write_text("")
    assert import_cycles(import_graph(tmp_path, ("toy",))) == [["toy.c", "toy.sub"]]


def test_only_the_ray_train_glue_imports_the_loop() -> None:
    """trainables.loop is the loop and its Ray glue: the trial driver hands it to Ray Train; every
    piece others need (data, state, checkpoints, evaluation) lives in the torch core."""
    importers = sorted(name for name, imported in import_graph().items() if "trainables.loop" in imported)
    assert importers == ["orchestrator.tune_driver"]


def test_no_import_cycles() -> None:
    assert import_cycles(import_graph()) == []
