"""The layout's guard-rails: module size, import boundaries, one logger handler, printing, quirks by name.

A file's name says what lives in it and what it may import (docs: README "Layout"). These tests read
the source (AST), so they hold for code paths no other test runs, and imports inside functions count.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "milvus_m3"
MAX_LINES = 450

MODULES = sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def rel(path: Path) -> str:
    return path.relative_to(PACKAGE).as_posix()


def imported_roots(path: Path) -> set[str]:
    """Top-level package names imported anywhere in the file (module level or inside functions)."""
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


# Which files may talk to Milvus, and which may touch the model stack.
MILVUS_PACKAGES = {"pymilvus", "milvus_lite"}
MILVUS_FILES = {
    "connection.py", "_retry.py", "_lite.py", "schema.py", "collection.py", "_rows.py",
}
MILVUS_DIRS = ("search/",)
MODEL_PACKAGES = {"torch", "FlagEmbedding", "transformers", "sentence_transformers", "safetensors", "huggingface_hub"}
MODEL_FILES = {"_flag_backend.py", "checkpoint.py", "testing.py"}
MODEL_DIRS = ("encoders/",)


def allowed(name: str, files: set[str], dirs: tuple[str, ...]) -> bool:
    return name in files or name.startswith(dirs)


def test_the_package_has_the_layout_the_readme_describes() -> None:
    names = {rel(p) for p in MODULES}
    for must in ("errors.py", "types.py", "fusion.py", "sparse.py", "filters.py", "embedder.py", "checkpoint.py",
                 "connection.py", "capabilities.py", "schema.py", "collection.py", "search/searcher.py",
                 "search/requests.py", "search/execute.py", "search/rerank.py", "ingest/pipeline.py",
                 "evaluate/runner.py", "cli/parser.py", "cli/commands.py", "encoders/__init__.py"):
        assert must in names, f"milvus_m3/{must} is missing: update the README Layout and this test together"


@pytest.mark.parametrize("path", MODULES, ids=rel)
def test_no_module_is_longer_than_the_cap(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"milvus_m3/{rel(path)} has {lines} lines (cap {MAX_LINES}): split it by concern"


@pytest.mark.parametrize("path", MODULES, ids=rel)
def test_only_the_milvus_modules_import_pymilvus(path: Path) -> None:
    found = imported_roots(path) & MILVUS_PACKAGES
    if found:
        assert allowed(rel(path), MILVUS_FILES, MILVUS_DIRS), (
            f"milvus_m3/{rel(path)} imports {sorted(found)}; only the connection, schema/collection and "
            "search modules talk to Milvus"
        )


@pytest.mark.parametrize("path", MODULES, ids=rel)
def test_only_the_model_modules_import_the_model_stack(path: Path) -> None:
    found = imported_roots(path) & MODEL_PACKAGES
    if found:
        assert allowed(rel(path), MODEL_FILES, MODEL_DIRS), (
            f"milvus_m3/{rel(path)} imports {sorted(found)}; only the embedder backend, checkpoint and "
            "encoder modules touch torch / FlagEmbedding / transformers"
        )


def test_pure_modules_import_neither_milvus_nor_torch() -> None:
    for name in ("fusion.py", "sparse.py", "filters.py", "types.py", "errors.py", "capabilities.py", "_text.py"):
        found = imported_roots(PACKAGE / name) & (MILVUS_PACKAGES | MODEL_PACKAGES)
        assert not found, f"milvus_m3/{name} imports {sorted(found)}"


def test_one_null_handler_on_the_package_logger() -> None:
    holders = [rel(p) for p in MODULES if "NullHandler" in p.read_text(encoding="utf-8")]
    assert holders == ["__init__.py"]


def _prints(path: Path) -> bool:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return any(
        isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print"
        for node in ast.walk(tree)
    )


def test_only_the_command_line_prints() -> None:
    # testing.py's main() is the `python -m milvus_m3.testing OUT` command that builds a checkpoint.
    printers = sorted(rel(p) for p in MODULES if _prints(p))
    assert all(p.startswith("cli/") or p == "testing.py" for p in printers), printers


def test_engine_differences_are_named_flags_decided_in_capabilities() -> None:
    users = sorted(rel(p) for p in MODULES if "is_lite" in p.read_text(encoding="utf-8"))
    assert users == ["capabilities.py"], f"branch on a named Capabilities flag instead of is_lite: {users}"


def test_contracts_are_declared_not_probed() -> None:
    for path in MODULES:
        text = path.read_text(encoding="utf-8")
        for probe in ('"document_max_length"', '"config_key"', '"colbert" in inspect'):
            assert probe not in text, f"milvus_m3/{rel(path)} probes {probe}: use the Protocols in types.py"


PUBLIC_ALL: dict[str, list[str]] = {}
"""Each public module's ``__all__``, pinned: adding or removing a public name is a visible decision."""


@pytest.mark.parametrize("module", sorted(PUBLIC_ALL))
def test_public_module_all_is_pinned(module: str) -> None:
    mod = importlib.import_module(module)
    assert sorted(mod.__all__) == mod.__all__ or list(mod.__all__) == PUBLIC_ALL[module]
    assert list(mod.__all__) == PUBLIC_ALL[module]
    for name in mod.__all__:
        assert hasattr(mod, name), f"{module}.__all__ names {name!r}, which it does not define"


def test_every_public_module_is_pinned() -> None:
    public = set()
    for path in MODULES:
        parts = path.relative_to(ROOT).with_suffix("").parts
        if any(part.startswith("_") and part not in ("__init__",) for part in parts):
            continue
        name = ".".join(p for p in parts if p != "__init__")
        if name.endswith("__main__"):
            continue
        public.add(name)
    assert public == set(PUBLIC_ALL), f"pin these modules' __all__: {sorted(public ^ set(PUBLIC_ALL))}"
