"""The layout's guard-rails: import boundaries, private means private, no import cycles, one logger
handler, printing, quirks by name, the pinned public surface. Size is no rule (functions are bounded by
ruff's C901 and PLR0915 instead, tests/unit/test_typing.py).

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
    "engine/connection.py",
    "engine/retry.py",
    "engine/lite.py",
    "collection/registry.py",  # the registry collection of the models first writes recorded (issue 11)
    "collection/schema.py",
    "collection/manager.py",
    "collection/rows.py",
    "collection/async_manager.py",  # AsyncMilvusClient (the async manager)
}
MILVUS_DIRS = ("search/",)
MODEL_PACKAGES = {
    "torch",
    "FlagEmbedding",
    "transformers",
    "sentence_transformers",
    "safetensors",
    "huggingface_hub",
    "tokenizers",
}
# The two torch backends (transformers_backend, the default, with BGE-M3's encoder in xlmr;
# flagembedding_backend) and the torch helpers they share (torch_common); the encode loop (loop),
# batching and multi_device import none.
MODEL_FILES = {
    "embedder/flagembedding_backend.py",
    "embedder/transformers_backend.py",
    "embedder/torch_common.py",
    "embedder/xlmr.py",
    "embedder/checkpoint.py",
    "testing.py",
    "rerankers/model.py",  # the cross-encoder behind rerankers.CrossEncoderReranker (issue 12)
}
MODEL_DIRS = ("encoders/",)
# Ray (the optional `ray` extra) only in the driver of Ray ingestion; what runs in its workers
# (ingest/_ray_tasks.py) is plain milvus-m3 code and talks to Milvus through CollectionManager.
RAY_PACKAGES = {"ray"}
RAY_FILES = {"ingest/ray_engine.py"}
# The framework adapters: only integrations/ imports LangChain / LlamaIndex (and pydantic, LangChain's
# model layer); they talk to Milvus and the model only through HybridSearcher.
FRAMEWORK_PACKAGES = {"langchain_core", "llama_index", "pydantic"}
FRAMEWORK_DIRS = ("integrations/",)


def allowed(name: str, files: set[str], dirs: tuple[str, ...]) -> bool:
    return name in files or name.startswith(dirs)


def test_the_package_has_the_layout_the_readme_describes() -> None:
    names = {rel(p) for p in MODULES}
    for must in (
        "errors.py",
        "types.py",
        "fusion.py",
        "sparse.py",
        "filters.py",
        "embedder/__init__.py",
        "embedder/model.py",
        "embedder/backend.py",
        "embedder/checkpoint.py",
        "engine/connection.py",
        "engine/capabilities.py",
        "collection/__init__.py",
        "collection/schema.py",
        "collection/manager.py",
        "rerankers/__init__.py",
        "search/searcher.py",
        "search/requests.py",
        "search/execute.py",
        "search/rerank.py",
        "ingest/pipeline.py",
        "evaluate/runner.py",
        "cli/parser.py",
        "cli/commands.py",
        "encoders/__init__.py",
    ):
        assert must in names, f"milvus_m3/{must} is missing: update the README Layout and this test together"


ROOT_FILES = {
    "__init__.py",
    "__main__.py",
    "_version.py",
    "_checks.py",
    "errors.py",
    "types.py",
    "fusion.py",
    "sparse.py",
    "filters.py",
    "testing.py",
}
"""The package root: the public surface and the shared, pure pieces; everything else lives in a part's folder."""


def test_the_package_root_holds_only_the_shared_pieces() -> None:
    root = {p.name for p in PACKAGE.glob("*.py")}
    assert root == ROOT_FILES, f"put {sorted(root - ROOT_FILES)} in a part's folder (README 'Layout')"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(p for p in parts if p != "__init__")


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(child) for child in ast.walk(node))
    return skip


def package_imports(path: Path) -> list[tuple[str, str, int]]:
    """(imported module, imported name, line) for every milvus_m3 import the file runs (module level or
    inside functions; not under TYPE_CHECKING). The module is the imported submodule when the name is
    one (``from . import lite``), else the module the name comes from."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _type_checking_nodes(tree)
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom) or id(node) in skip:
            continue
        if node.level:
            base = package[: len(package) - (node.level - 1)]
            target = ".".join(base + ([node.module] if node.module else []))
        else:
            target = node.module or ""
        if not target.startswith("milvus_m3"):
            continue
        for alias in node.names:
            sub = f"{target}.{alias.name}"
            if sub in MODULE_NAMES:
                out.append((sub, "", node.lineno))
            else:
                out.append((target, alias.name, node.lineno))
    return out


MODULE_NAMES = {module_name(p) for p in MODULES}


@pytest.mark.parametrize("path", MODULES, ids=rel)
def test_no_private_name_is_imported_from_another_module(path: Path) -> None:
    found = [
        f"{name} from {mod} (line {line})"
        for mod, name, line in package_imports(path)
        if name.startswith("_") and not name.startswith("__")
    ]
    assert not found, f"milvus_m3/{rel(path)} imports private names {found}: make them public or move them"


@pytest.mark.parametrize("path", MODULES, ids=rel)
def test_a_private_module_is_imported_only_from_its_own_folder(path: Path) -> None:
    me = module_name(path)
    bad = []
    for mod, _, line in package_imports(path):
        parts = mod.split(".")
        for i, part in enumerate(parts):
            if part.startswith("_") and not part.startswith("__"):
                folder = ".".join(parts[:i])
                if not (me == folder or me.startswith(folder + ".")):
                    bad.append(f"{mod} (line {line})")
    assert not bad, f"milvus_m3/{rel(path)} imports {bad}, private to another folder"


def test_no_import_cycles() -> None:
    graph = {module_name(p): {m for m, _, _ in package_imports(p)} - {module_name(p)} for p in MODULES}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not cycles, f"runtime import cycles (imports inside functions count): {cycles}"


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


@pytest.mark.parametrize("path", MODULES, ids=rel)
def test_only_the_ray_driver_imports_ray(path: Path) -> None:
    found = imported_roots(path) & RAY_PACKAGES
    if found:
        assert rel(path) in RAY_FILES, (
            f"milvus_m3/{rel(path)} imports ray; only ingest/ray_engine.py may (the optional ray extra)"
        )


def test_importing_the_package_never_imports_ray() -> None:
    import subprocess
    import sys

    code = (
        "import sys, milvus_m3, milvus_m3.ingest, milvus_m3.cli.commands, milvus_m3.ingest.ray_engine; "
        "milvus_m3.cli.commands.build_parser().parse_args(['ingest', 'x', '--collection', 'c']); "
        "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("path", MODULES, ids=rel)
def test_only_the_integrations_import_the_frameworks(path: Path) -> None:
    found = imported_roots(path) & FRAMEWORK_PACKAGES
    if found:
        assert allowed(rel(path), set(), FRAMEWORK_DIRS), (
            f"milvus_m3/{rel(path)} imports {sorted(found)}; only milvus_m3/integrations/ adapts to frameworks"
        )
    if rel(path).startswith(FRAMEWORK_DIRS):
        assert not imported_roots(path) & (MILVUS_PACKAGES | MODEL_PACKAGES), rel(path)


def test_pure_modules_import_neither_milvus_nor_torch() -> None:
    for name in (
        "fusion.py",
        "sparse.py",
        "filters.py",
        "types.py",
        "errors.py",
        "_checks.py",
        "engine/capabilities.py",
        "collection/fields.py",
        "embedder/batching.py",
        "embedder/backend.py",
        "embedder/backends.py",
        "embedder/loop.py",
        "embedder/multi_device.py",
        "embedder/model.py",
    ):
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
    assert users == ["engine/capabilities.py"], (
        f"branch on a named Capabilities flag instead of is_lite: {users}"
    )


ABILITIES = {"document_max_length", "max_length", "chunk_spans", "colbert_dim", "config_key", "count_tokens"}


def _probes(path: Path) -> list[str]:
    """getattr/hasattr on one of our declared abilities, and inspect.signature (what a Protocol declares)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Call):
            continue
        fn = node.func
        if isinstance(fn, ast.Name) and fn.id in ("getattr", "hasattr") and len(node.args) >= 2:
            arg = node.args[1]
            if isinstance(arg, ast.Constant) and arg.value in ABILITIES:
                found.append(f"{fn.id}(..., {arg.value!r}) line {node.lineno}")
        if isinstance(fn, ast.Attribute) and fn.attr == "signature":
            found.append(f"inspect.signature line {node.lineno}")
    return found


@pytest.mark.parametrize("path", MODULES, ids=rel)
def test_contracts_are_declared_not_probed(path: Path) -> None:
    probes = _probes(path)
    if rel(path) == "engine/connection.py":
        # pymilvus's own methods: which of them take timeout= (a foreign library, not our contract)
        probes = [p for p in probes if not p.startswith("inspect.signature")]
    assert not probes, f"milvus_m3/{rel(path)} probes {probes}: declare the ability as a Protocol in types.py"


PUBLIC_ALL: dict[str, list[str]] = {
    "milvus_m3": [
        "AsyncCollectionManager",
        "AsyncHybridSearcher",
        "CollectionError",
        "CollectionExistsError",
        "CollectionInfo",
        "CollectionManager",
        "CollectionNotFoundError",
        "CollectionSpec",
        "ConfigError",
        "ConnectionOptions",
        "CrossEncoderReranker",
        "Encoder",
        "F",
        "Filter",
        "FilterError",
        "Hit",
        "HybridSearcher",
        "IngestAborted",
        "IngestOptions",
        "IngestReport",
        "InputError",
        "M3Embedder",
        "M3Embeddings",
        "MilvusM3Error",
        "MilvusUnavailableError",
        "MissingDependencyError",
        "ModelLoadError",
        "RetryPolicy",
        "ScalarField",
        "SchemaMismatchError",
        "SearchError",
        "TextTooLongError",
        "ingest",
    ],
    "milvus_m3.cli": ["build_parser", "main"],
    "milvus_m3.collection": ["CollectionInfo", "CollectionManager", "CollectionSpec", "ScalarField"],
    "milvus_m3.embedder": ["BACKENDS", "DEFAULT_MODEL", "OVERFLOW_MODES", "PRECISIONS", "M3Embedder"],
    "milvus_m3.encoders": [
        "MINILM_ALIAS",
        "SPLADE_TINY_ALIAS",
        "CombinedEncoder",
        "SentenceTransformerEncoder",
        "SpladeEncoder",
        "bundled_minilm_path",
        "bundled_splade_tiny_path",
    ],
    "milvus_m3.engine": [],
    "milvus_m3.errors": [
        "CollectionError",
        "CollectionExistsError",
        "CollectionNotFoundError",
        "ConfigError",
        "FilterError",
        "IngestAborted",
        "InputError",
        "MilvusM3Error",
        "MilvusUnavailableError",
        "MissingDependencyError",
        "ModelLoadError",
        "SchemaMismatchError",
        "SearchError",
        "TextTooLongError",
    ],
    "milvus_m3.evaluate": [
        "ALL_MODES",
        "BM25_FIELD",
        "BeirDataset",
        "CachedEncoder",
        "EvalConfig",
        "EvalReport",
        "ModeResult",
        "create_bm25_collection",
        "evaluate_run",
        "load_beir",
        "mrr_at_k",
        "ndcg_at_k",
        "rank_run",
        "read_qrels",
        "recall_at_k",
        "run_evaluation",
    ],
    "milvus_m3.filters": [
        "FIELD_KINDS",
        "OPERATORS",
        "Dialect",
        "F",
        "FieldKind",
        "Filter",
        "FilterLike",
        "literal",
        "path_expr",
        "render",
    ],
    "milvus_m3.fusion": [
        "DBSF_SPREAD",
        "M3_COLBERT_WEIGHT",
        "M3_DENSE_WEIGHT",
        "M3_SPARSE_WEIGHT",
        "NORMALIZERS",
        "RRF_K",
        "Normalize",
        "colbert_score",
        "dbsf",
        "dense_score",
        "id_order",
        "m3_scores",
        "normalize_score",
        "rrf",
        "score_sum",
        "tiered",
        "weighted",
    ],
    "milvus_m3.ingest": [
        "FORMATS",
        "IngestAborted",
        "IngestOptions",
        "IngestReport",
        "Record",
        "RowError",
        "content_id",
        "default_state_path",
        "detect_format",
        "ingest",
        "read_records",
    ],
    "milvus_m3.integrations": [],
    "milvus_m3.integrations.langchain": ["MilvusM3Retriever", "to_document"],
    "milvus_m3.integrations.llama_index": ["MilvusM3Retriever", "to_node"],
    "milvus_m3.rerankers": ["CrossEncoderReranker"],
    "milvus_m3.search": ["MAX_TOPK", "HybridSearcher", "Mode", "RankerName"],
    "milvus_m3.sparse": [
        "MAX_SPARSE_ID",
        "lexical_score",
        "prune",
        "to_milvus_sparse",
        "validate_sparse_rows",
    ],
    "milvus_m3.testing": [
        "FULL_SIZE",
        "TOKENIZER_ENV",
        "build_checkpoint",
        "build_reranker_checkpoint",
        "find_tokenizer_file",
        "main",
    ],
    "milvus_m3.types": [
        "CacheKeyed",
        "ChunkingEncoder",
        "ColbertEncoder",
        "Encoder",
        "Fingerprinted",
        "Hit",
        "LengthLimited",
        "M3Embeddings",
        "Reranker",
        "SparseVector",
    ],
}
"""Each public module's ``__all__``, pinned: adding or removing a public name is a visible decision."""


@pytest.mark.parametrize("module", sorted(PUBLIC_ALL))
def test_public_module_all_is_pinned(module: str) -> None:
    mod = importlib.import_module(module)
    assert list(mod.__all__) == PUBLIC_ALL[module]
    for name in mod.__all__:
        assert hasattr(mod, name), f"{module}.__all__ names {name!r}, which it does not define"


def test_every_public_module_is_pinned() -> None:
    """The façades are pinned: the package, the shared modules of its root, each part's folder and the
    framework adapters. Implementation modules inside a part's folder are not: their names may change."""
    public = set()
    for path in MODULES:
        name = module_name(path)
        parts = name.split(".")
        if any(part.startswith("_") for part in parts[1:]):
            continue
        if len(parts) <= 2 or path.name == "__init__.py" or parts[1] == "integrations":
            public.add(name)
    assert public == set(PUBLIC_ALL), f"pin these modules' __all__: {sorted(public ^ set(PUBLIC_ALL))}"


MOVED = {
    "milvus_m3.async_collection": "milvus_m3.collection.async_manager",
    "milvus_m3.capabilities": "milvus_m3.engine.capabilities",
    "milvus_m3.checkpoint": "milvus_m3.embedder.checkpoint",
    "milvus_m3.connection": "milvus_m3.engine.connection",
    "milvus_m3.reranker": "milvus_m3.rerankers.cross_encoder",
    "milvus_m3.schema": "milvus_m3.collection.schema",
}


@pytest.mark.parametrize("old", sorted(MOVED))
def test_the_import_paths_of_earlier_releases_keep_working(old: str) -> None:
    """``import milvus_m3.connection`` gives the very module that now lives in ``engine/``: one object, so a
    monkeypatch through either name reaches the code, and its names are all there."""
    import subprocess
    import sys

    code = (
        f"import importlib, {old} as a, {MOVED[old]} as b; "
        f"assert a is b and a.__name__ == {MOVED[old]!r} and a.__spec__.name == {MOVED[old]!r}; "
        f"from {old} import *; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.stdout.strip() == "ok", out.stderr


def test_the_readme_layout_names_every_module() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme[readme.index("## Layout") :]
    block = block[: block.index("Where to touch")]
    skip = {"__init__.py", "__main__.py", "_version.py"}
    missing = sorted(rel(p) for p in MODULES if p.name not in skip and p.stem not in block)
    assert not missing, f"README 'Layout' does not name {missing}: describe them there"
