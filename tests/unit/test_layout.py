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
    "connection.py",
    "_retry.py",
    "_lite.py",
    "_model_registry.py",  # the registry collection of the models first writes recorded (issue 11)
    "schema.py",
    "collection.py",
    "_rows.py",
    "async_collection.py",  # AsyncMilvusClient (the async manager)
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
# The two torch backends (_hf_backend, the default, with BGE-M3's encoder in _xlmr; _flag_backend:
# FlagEmbedding) and the loop they share (_torch_backend); _batching and _multi_device import none.
MODEL_FILES = {
    "_flag_backend.py",
    "_hf_backend.py",
    "_torch_backend.py",
    "_xlmr.py",
    "checkpoint.py",
    "testing.py",
    "_cross_encoder.py",  # the cross-encoder behind reranker.CrossEncoderReranker (issue 12)
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
        "embedder.py",
        "checkpoint.py",
        "connection.py",
        "capabilities.py",
        "schema.py",
        "collection.py",
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


@pytest.mark.parametrize("path", MODULES, ids=rel)
def test_no_module_is_longer_than_the_cap(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, (
        f"milvus_m3/{rel(path)} has {lines} lines (cap {MAX_LINES}): split it by concern"
    )


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
        "capabilities.py",
        "_text.py",
        "_batching.py",
        "_backend.py",
        "_multi_device.py",
        "embedder.py",
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
    assert users == ["capabilities.py"], f"branch on a named Capabilities flag instead of is_lite: {users}"


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
    if rel(path) == "connection.py":
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
    "milvus_m3.async_collection": ["AsyncCollectionManager"],
    "milvus_m3.capabilities": [
        "LITE_CAPABILITIES",
        "MIN_SERVER_VERSION",
        "Capabilities",
        "capabilities_for_version",
        "server_capabilities",
    ],
    "milvus_m3.checkpoint": [
        "DEFAULT_MODEL",
        "KNOWN_DENSE_DIMS",
        "MODEL_ENV",
        "check_model_dir",
        "check_reranker_dir",
        "dense_dim_from_config",
        "fingerprint_of",
        "model_fingerprint",
        "refuse_remote_code",
        "resolve_model_dir",
    ],
    "milvus_m3.cli": ["build_parser", "main"],
    "milvus_m3.cli.commands": ["COMMANDS", "dense_dim_of", "main"],
    "milvus_m3.cli.eval": [
        "DEFAULT_CACHE_DIR",
        "add_eval_arguments",
        "add_eval_parser",
        "build_eval_parser",
        "run_eval_cli",
    ],
    "milvus_m3.cli.ingest": ["run_ingest"],
    "milvus_m3.cli.parser": [
        "DEFAULT_URI",
        "EPILOG",
        "EXIT_REJECTED",
        "TOKEN_ENV",
        "URI_ENV",
        "add_connection_arguments",
        "build_parser",
        "choices",
        "connection_options",
        "default",
        "from_args",
    ],
    "milvus_m3.collection": ["CollectionInfo", "CollectionManager", "CollectionSpec", "ScalarField"],
    "milvus_m3.connection": [
        "LITE_CAPABILITIES",
        "Capabilities",
        "Connection",
        "ConnectionOptions",
        "RetryPolicy",
        "capabilities_for_version",
        "is_auth_failure",
        "is_transient",
        "redact_uri",
    ],
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
    "milvus_m3.encoders.combined": ["CombinedEncoder"],
    "milvus_m3.encoders.sentence_transformers": ["SentenceTransformerEncoder"],
    "milvus_m3.encoders.splade": ["SpladeEncoder"],
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
    "milvus_m3.evaluate.beir": ["BeirDataset", "load_beir", "read_qrels"],
    "milvus_m3.evaluate.cache": ["CachedEncoder"],
    "milvus_m3.evaluate.metrics": [
        "Ranked",
        "evaluate_run",
        "mrr_at_k",
        "ndcg_at_k",
        "per_query_metrics",
        "randomization_test",
        "rank_run",
        "recall_at_k",
    ],
    "milvus_m3.evaluate.report": [
        "ALL_MODES",
        "DEFAULT_TUNE_GRID",
        "FUSED_LEGS",
        "MODE_HELP",
        "SINGLE_MODES",
        "EvalConfig",
        "EvalReport",
        "ModeResult",
    ],
    "milvus_m3.evaluate.rerank": [
        "RERANK_SUFFIX",
        "load_cross_encoder",
        "mode_result",
        "rerank_run",
        "rerank_variant",
        "reranked_modes",
    ],
    "milvus_m3.evaluate.runner": ["BM25_FIELD", "Run", "create_bm25_collection", "run_evaluation"],
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
    "milvus_m3.ingest.checkpoint": [
        "STATE_VERSION",
        "Checkpoint",
        "ErrorLog",
        "atomic_write_json",
        "default_state_path",
        "file_stat",
        "fsync_dir",
        "source_key",
    ],
    "milvus_m3.ingest.guard": ["ERROR_KEYS", "JobLock", "check_paths", "is_errors_file", "is_state_file"],
    "milvus_m3.ingest.ids": ["IdChoices", "check_id", "content_id"],
    "milvus_m3.ingest.options": [
        "ENGINES",
        "ON_ERROR",
        "RESUME_FIELDS",
        "IngestOptions",
        "RayOptions",
        "build_options",
    ],
    "milvus_m3.ingest.pipeline": ["QUEUE_BATCHES", "ingest"],
    "milvus_m3.ingest.prepare": [
        "MAX_CHUNKED_BYTES",
        "Batch",
        "Doc",
        "Preparer",
        "check_encoder",
        "convert_scalar",
    ],
    "milvus_m3.ingest.ray_engine": ["M3EmbedderFactory", "RayOptions", "ray_ingest"],
    "milvus_m3.ingest.readers": [
        "FORMATS",
        "MAX_CSV_ROW_LINES",
        "PARQUET_BATCH_ROWS",
        "STDIN",
        "Format",
        "Skipped",
        "detect_format",
        "estimate_records",
        "read_records",
        "read_source",
        "require_pyarrow",
    ],
    "milvus_m3.ingest.records": [
        "MAX_REPORTED_ERRORS",
        "BadValue",
        "IngestReport",
        "Record",
        "RowError",
        "json_type",
    ],
    "milvus_m3.integrations": [],
    "milvus_m3.integrations.langchain": ["MilvusM3Retriever", "to_document"],
    "milvus_m3.integrations.llama_index": ["MilvusM3Retriever", "to_node"],
    "milvus_m3.reranker": ["DEFAULT_RERANKER", "OVERFLOW_MODES", "PRECISIONS", "CrossEncoderReranker"],
    "milvus_m3.schema": [
        "BM25_ANALYZERS",
        "BM25_FIELD",
        "CHUNK_FIELD",
        "DEFAULT_BM25_ANALYZER",
        "DENSE_FIELD",
        "ID_FIELD",
        "METADATA_FIELD",
        "PARENT_FIELD",
        "RESERVED_FIELDS",
        "SPARSE_FIELD",
        "TEXT_FIELD",
        "Analyzer",
        "CollectionInfo",
        "CollectionSpec",
        "FunctionField",
        "ScalarField",
        "build_index_params",
        "build_record",
        "build_schema",
        "check_collection_name",
        "default_output_fields",
        "model_key",
        "not_found_message",
        "parse_build_record",
        "resolve_spec",
    ],
    "milvus_m3.search": ["MAX_TOPK", "HybridSearcher", "Mode", "RankerName"],
    "milvus_m3.search.async_searcher": ["AsyncHybridSearcher", "AsyncPlanRunner"],
    "milvus_m3.search.candidates": [
        "CandidateSet",
        "DocColbert",
        "M3Weights",
        "Mode",
        "ScoreScale",
        "sparse_score",
    ],
    "milvus_m3.search.execute": ["PlanRunner"],
    "milvus_m3.search.options": [
        "CANDIDATE_FACTOR",
        "CLIENT_SIDE_MODES",
        "DEFAULT_CANDIDATES",
        "DEFAULT_MODE",
        "DEFAULT_RANKER",
        "FUSIONS",
        "LEGS",
        "MAX_RRF_K",
        "MAX_TOPK",
        "MODES",
        "RANKERS",
        "Fusion",
        "Leg",
        "Mode",
        "RankerName",
        "SearchOptions",
        "SearchPlan",
        "check_bool",
        "check_candidate_limit",
        "check_fusion",
        "check_int",
        "check_legs",
        "check_mode",
        "check_params",
        "check_queries",
        "check_query_vectors",
        "check_ranker",
        "check_rrf_k",
        "check_weights",
    ],
    "milvus_m3.search.rankers": [
        "REGISTRY",
        "MilvusRanker",
        "RankerParams",
        "RankerSpec",
        "check_server_fusion",
        "nonnegative_weights",
        "ranker_spec",
        "unit_weights",
    ],
    "milvus_m3.search.requests": [
        "DEFAULT_DROP_RATIO_SEARCH",
        "DEFAULT_HNSW_EF",
        "DEFAULT_IVF_NPROBE",
        "FieldRequest",
        "bm25_request",
        "dense_request",
        "dense_search_params",
        "rrf_ranker",
        "sparse_request",
        "sparse_search_params",
        "weighted_ranker",
    ],
    "milvus_m3.search.rerank": [
        "CandidateSet",
        "M3Reranker",
        "M3Weights",
        "colbert_score",
        "dense_score",
        "sparse_score",
    ],
    "milvus_m3.search.rerank_stage": [
        "DEFAULT_RERANK_DEPTH",
        "RerankStage",
        "check_rerank_depth",
        "check_reranker",
        "first_stage",
        "rerank_hits",
        "with_rerank_stage",
    ],
    "milvus_m3.search.searcher": ["HybridSearcher", "Mode", "RankerName"],
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


def test_the_readme_layout_names_every_module() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme[readme.index("## Layout") :]
    block = block[: block.index("Where to touch")]
    skip = {"__init__.py", "__main__.py", "_version.py"}
    missing = sorted(rel(p) for p in MODULES if p.name not in skip and p.stem not in block)
    assert not missing, f"README 'Layout' does not name {missing}: describe them there"
