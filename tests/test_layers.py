"""The stages' import rules, read from the source (an AST walk of every import, lazy ones included):

    core    -> core                                (torch-free contract: config, format, errors, files)
    runtime -> core, runtime                       (torch-free renderer)
    model   -> core, model                         (cips_edge/*.py: generator, coordinates, checkpoints)
    metrics -> core, model, runtime, metrics
    train   -> core, model, metrics, export, train (export: --init-from a model file reads its generator
                                                    back through the exporter's own tracer)
    export  -> core, model, runtime, export
    cli     -> anything                            (cli.py and the commands/ package)

and no import cycle between modules at module level."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ALLOWED = {
    "core": {"core"},
    "runtime": {"core", "runtime"},
    "model": {"core", "model"},
    "metrics": {"core", "model", "runtime", "metrics"},
    "train": {"core", "model", "metrics", "export", "train"},
    "export": {"core", "model", "runtime", "export"},
}


def source_files() -> dict[str, Path]:
    """Installed module name -> source file, as pyproject maps them."""
    files = {"cips_edge.cli": ROOT / "cli.py"}
    for folder, package in (("cips_edge", "cips_edge"), ("runtime", "cips_edge.runtime"), ("export", "cips_edge.export"),
                            ("commands", "cips_edge.commands")):
        for path in (ROOT / folder).rglob("*.py"):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            files[".".join([package, *parts])] = path
    return files


def part(module: str) -> str:
    for name in ("core", "runtime", "export", "metrics", "train", "cli", "commands"):
        if module == f"cips_edge.{name}" or module.startswith(f"cips_edge.{name}."):
            return "cli" if name == "commands" else name
    return "model"


def imports(module: str, path: Path, modules: set[str], top_level_only: bool) -> set[str]:
    """The project modules `module` imports (a from-import of a submodule counts as that submodule)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else ast.walk(tree)
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        found.update(n for n in names if n in modules or n.split(".")[0] == "cips_edge" and n in modules)
    return found


def test_every_stage_imports_only_what_it_may():
    files = source_files()
    modules = set(files)
    broken = []
    for module, path in sorted(files.items()):
        source = part(module)
        if source == "cli":
            continue
        for target in sorted(imports(module, path, modules, top_level_only=False)):
            if part(target) not in ALLOWED[source]:
                broken.append(f"{path.relative_to(ROOT)} ({source}) imports {target} ({part(target)})")
    assert not broken, "\n".join(broken)


def test_no_import_cycles():
    files = source_files()
    modules = set(files)
    graph = {m: imports(m, p, modules, top_level_only=True) - {m} for m, p in files.items()}
    # a package's __init__ importing its own submodules is how packages are built; the reverse edge
    # (a submodule importing its package) is the cycle to avoid, and shows up as any other cycle
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(trail[trail.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "\n".join(cycles)
