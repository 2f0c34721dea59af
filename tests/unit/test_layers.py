"""The package's layering, read from the source: lower layers never import higher ones (not even
inside a function), no import cycles, no module outside ``crm_predict``'s names, and no private
names of the libraries we build on."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Installed name → folder (pyproject's package-dir).
HOMES = {
    "crm_predict": "crm_predict",
    "crm_predict.crm_store": "crm_store",
    "crm_predict.features": "features",
    "crm_predict.training": "training",
    "crm_predict.registry": "registry",
    "crm_predict.serving": "serving",
}
# Bottom to top; the command-line modules sit above every package.
LAYERS = (
    "crm_predict.core",
    "crm_predict.crm_store",
    "crm_predict.training",
    "crm_predict.features",
    "crm_predict.registry",
    "crm_predict.serving",
)
LIBRARIES = (
    "feast", "mlflow", "redis", "xgboost", "bentoml", "sklearn", "shap", "lifetimes", "optuna",
    "pyarrow", "psycopg", "sqlalchemy", "pydantic", "pydantic_settings", "typer", "rich",
)  # fmt: skip


def _modules() -> dict[str, Path]:
    modules = {}
    for package, home in HOMES.items():
        for path in (ROOT / home).rglob("*.py"):
            parts = path.relative_to(ROOT / home).with_suffix("").parts
            if "migrations" in parts:  # Alembic loads these by path
                continue
            modules[".".join([package, *(p for p in parts if p != "__init__")])] = path
    return modules


MODULES = _modules()
TREES = {name: ast.parse(path.read_text("utf-8")) for name, path in MODULES.items()}


def _layer(module: str) -> int:
    last = module.rsplit(".", 1)[-1]
    if (
        last == "cli"
        or last.endswith("_cli")
        or module in ("crm_predict", "crm_predict.quickstart")
    ):
        return len(LAYERS)
    return next(i for i, p in enumerate(LAYERS) if module == p or module.startswith(p + "."))


def _imports(tree: ast.Module) -> list[str]:
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    return names


def _edges() -> dict[str, set[str]]:
    return {
        name: {t for t in _imports(tree) if t in MODULES and t != name}
        for name, tree in TREES.items()
    }


def test_every_module_has_a_layer():
    assert all(isinstance(_layer(m), int) for m in MODULES)


def test_no_module_imports_a_higher_layer():
    upward = [
        f"{m} -> {t}" for m, targets in _edges().items() for t in targets if _layer(t) > _layer(m)
    ]
    assert not upward, upward


def test_no_import_cycles():
    edges, seen, cycles = _edges(), set(), []

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            cycles.append(path[path.index(module) :] + [module])
            return
        if module in seen:
            return
        for target in sorted(edges[module]):
            visit(target, path + [module])
        seen.add(module)

    for module in sorted(edges):
        visit(module, [])
    assert not cycles, cycles[:3]


@pytest.mark.parametrize("home", sorted(set(HOMES.values()) - {"crm_predict"}))
def test_packages_are_imported_by_their_installed_name(home):
    """``import features`` would work from the repository root only, as a second copy."""
    bare = [
        f"{m}: {name}"
        for m, tree in TREES.items()
        for name in _imports(tree)
        if name == home or name.startswith(home + ".")
    ]
    assert not bare, bare


def test_no_private_names_of_libraries():
    """In the package, the tests and the benchmarks alike."""
    trees = dict(TREES)
    for folder in ("tests", "benchmarks"):
        for path in (ROOT / folder).rglob("*.py"):
            trees[str(path.relative_to(ROOT))] = ast.parse(path.read_text("utf-8"))
    private = []
    for module, tree in trees.items():
        aliases = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] in LIBRARIES:
                        aliases[(alias.asname or alias.name).split(".")[0]] = alias.name
            elif (
                isinstance(node, ast.ImportFrom)
                and node.module
                and node.module.split(".")[0] in LIBRARIES
                and (
                    any(p.startswith("_") for p in node.module.split("."))
                    or any(a.name.startswith("_") for a in node.names)
                )
            ):
                private.append(f"{module}: from {node.module} import …")
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
                root = node.value
                while isinstance(root, ast.Attribute):
                    root = root.value
                dunder = node.attr.startswith("__") and node.attr.endswith("__")
                if isinstance(root, ast.Name) and root.id in aliases and not dunder:
                    private.append(f"{module}: {root.id}….{node.attr}")
    assert not private, private
