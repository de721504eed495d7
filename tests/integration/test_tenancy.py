"""Multi-tenancy on Milvus Lite and on the loopback gRPC server tier: a tenant never sees another's rows.

Tenant values are hostile on purpose (quotes, backslashes, newlines, ``) or (``): each is rendered by
``filters.render`` as an escaped literal and joined with the caller's filter inside parentheses; a raw
caller filter that would close those parentheses is refused. Every mode is checked, and get / delete /
upsert too. The same tests run on an embedded ``.db`` and through ``http://127.0.0.1:PORT``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from milvus_m3.collection.manager import CollectionManager, CollectionSpec, ScalarField
from milvus_m3.embedder.model import M3Embedder
from milvus_m3.errors import ConfigError, FilterError, InputError
from milvus_m3.filters import F
from milvus_m3.search import HybridSearcher

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]

HOSTILE = [
    "acme",
    'q"uote',
    "s'ingle",
    "back\\slash",
    "new\nline",
    ") or (",
    '" ) or ( tenant != "',
    "' or '' == '",
    'end\\"',
]
TEXTS = [
    "Milvus stores vectors for similarity search.",
    "BGE-M3 gives dense and sparse vectors.",
    "Bread rises because of yeast.",
]
MODES = ("hybrid", "dense", "sparse", "m3")


@pytest.fixture(params=["lite", pytest.param("server", marks=pytest.mark.server)])
def tier_manager(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CollectionManager]:
    if request.param == "lite":
        m = CollectionManager(str(tmp_path / "tenancy.db"))
        try:
            yield m
        finally:
            m.close()
    else:
        yield request.getfixturevalue("server_manager")


def _fill(manager: CollectionManager, embedder: M3Embedder) -> dict[str, list[str]]:
    """Every hostile tenant gets the same three texts under its own ids; returns tenant -> ids."""
    spec = CollectionSpec(
        dense_dim=embedder.dense_dim, model_name=embedder.model_name, partition_key="tenant"
    )
    manager.create_collection("tenants", spec=spec, recreate=True)
    emb = embedder.encode_documents(TEXTS)
    owned: dict[str, list[str]] = {}
    for t, tenant in enumerate(HOSTILE):
        ids = [f"t{t}-d{i}" for i in range(len(TEXTS))]
        manager.upsert("tenants", ids=ids, texts=TEXTS, embeddings=emb, tenant=tenant)
        owned[tenant] = ids
    return owned


def test_a_tenant_sees_only_its_rows_in_every_mode(
    tier_manager: CollectionManager, tiny_embedder: M3Embedder
) -> None:
    owned = _fill(tier_manager, tiny_embedder)
    searcher = HybridSearcher(tier_manager, "tenants", tiny_embedder)
    for tenant, ids in owned.items():
        for mode in MODES:
            hits = searcher.search("vectors", limit=20, mode=mode, tenant=tenant)  # type: ignore[arg-type]
            got = sorted(h.id for h in hits)
            # dense reaches every row; sparse only rows sharing a weighted token with the query
            assert got == sorted(ids) if mode != "sparse" else set(got) <= set(ids), (tenant, mode)
            assert all(h.fields["tenant"] == tenant for h in hits)
        # with a caller filter, raw or structured, and in a batch
        raw = searcher.search("vectors", limit=20, tenant=tenant, filter='id != ""')
        assert sorted(h.id for h in raw) == sorted(ids)
        structured = searcher.search("vectors", limit=20, tenant=tenant, filter=F.ne("id", ids[0]))
        assert sorted(h.id for h in structured) == sorted(ids[1:])
        batch = searcher.search_batch(["vectors", "bread"], limit=20, tenant=tenant)
        assert [sorted(h.id for h in hits) for hits in batch] == [sorted(ids)] * 2
    # a tenant nobody has: nothing, even when its value tries to end the comparison
    assert searcher.search("vectors", limit=20, tenant='" or id != "') == []


def test_a_raw_filter_that_escapes_its_parentheses_is_refused(
    tier_manager: CollectionManager, tiny_embedder: M3Embedder
) -> None:
    _fill(tier_manager, tiny_embedder)
    searcher = HybridSearcher(tier_manager, "tenants", tiny_embedder)
    for breakout in ('id != "" ) or ( id != ""', 'id != "") or (id != ""', "(id != ''", 'id == "a'):
        with pytest.raises(FilterError, match="unbalanced"):
            searcher.search("vectors", tenant="acme", filter=breakout)
    with pytest.raises(FilterError, match="unbalanced"):
        tier_manager.delete("tenants", filter='id != "" ) or ( id != ""', tenant="acme")
    assert tier_manager.count("tenants") == len(HOSTILE) * len(TEXTS)  # nothing was deleted


def test_get_and_delete_are_scoped_and_an_upsert_cannot_take_another_tenants_id(
    tier_manager: CollectionManager, tiny_embedder: M3Embedder
) -> None:
    owned = _fill(tier_manager, tiny_embedder)
    all_ids = [i for ids in owned.values() for i in ids]
    for tenant, ids in owned.items():
        rows = tier_manager.get("tenants", all_ids, tenant=tenant)
        assert [r["id"] for r in rows] == ids
        assert {r["tenant"] for r in rows} == {tenant}
    # another tenant's ids: not deleted
    victim, attacker = HOSTILE[1], HOSTILE[6]
    assert tier_manager.delete("tenants", ids=owned[victim], tenant=attacker) == 0
    assert len(tier_manager.get("tenants", owned[victim])) == len(TEXTS)
    # an upsert of a victim's id for another tenant is refused, and the victim's row is unchanged
    emb = tiny_embedder.encode_documents(["taken over"])
    with pytest.raises(InputError, match="another tenant") as info:
        tier_manager.upsert(
            "tenants", ids=[owned[victim][0]], texts=["taken over"], embeddings=emb, tenant=attacker
        )
    assert info.value.row == 0
    (row,) = tier_manager.get("tenants", [owned[victim][0]])
    assert (row["tenant"], row["text"]) == (victim, TEXTS[0])
    # a delete by filter deletes only inside the tenant
    assert tier_manager.delete("tenants", filter='id != ""', tenant=attacker) == len(TEXTS)
    assert tier_manager.count("tenants") == (len(HOSTILE) - 1) * len(TEXTS)
    assert tier_manager.get("tenants", owned[attacker]) == []


def test_rows_must_carry_their_tenant_and_tenant_needs_a_tenant_collection(
    tier_manager: CollectionManager, tiny_embedder: M3Embedder
) -> None:
    owned = _fill(tier_manager, tiny_embedder)
    emb = tiny_embedder.encode_documents(["x"])
    with pytest.raises(InputError):  # no tenant at all: the field is required
        tier_manager.upsert("tenants", ids=["loose"], texts=["x"], embeddings=emb)
    with pytest.raises(InputError, match="the upsert is for tenant"):
        tier_manager.upsert(
            "tenants", ids=["mixed"], texts=["x"], embeddings=emb, fields={"tenant": ["b"]}, tenant="a"
        )
    with pytest.raises(InputError, match="non-empty string"):
        HybridSearcher(tier_manager, "tenants", tiny_embedder).search("x", tenant="")
    plain = CollectionSpec(dense_dim=tiny_embedder.dense_dim, model_name=tiny_embedder.model_name)
    tier_manager.create_collection("plain", spec=plain, recreate=True)
    with pytest.raises(ConfigError, match="no tenant field"):
        HybridSearcher(tier_manager, "plain", tiny_embedder).search("x", tenant="acme")
    assert set(owned)


def test_partition_names_are_refused_where_the_engine_ignores_them(
    tier_manager: CollectionManager, tiny_embedder: M3Embedder
) -> None:
    """Measured on Milvus Lite 2.5.1 (embedded and its gRPC server): partition calls answer
    UNIMPLEMENTED and partition_name(s) are ignored (a delete "in" a partition deletes from all)."""
    _fill(tier_manager, tiny_embedder)
    assert not tier_manager.capabilities.partitions
    searcher = HybridSearcher(tier_manager, "tenants", tiny_embedder)
    emb = tiny_embedder.encode_documents(["x"])
    calls: list[Any] = [
        lambda: searcher.search("x", partition_names=["p1"]),
        lambda: tier_manager.get("tenants", ["t0-d0"], partition_names=["p1"]),
        lambda: tier_manager.delete("tenants", ids=["t0-d0"], partition_name="p1"),
        lambda: tier_manager.upsert(
            "tenants", ids=["n"], texts=["x"], embeddings=emb, tenant="acme", partition_name="p1"
        ),
        lambda: tier_manager.create_partition("tenants", "p1"),
        lambda: tier_manager.list_partitions("tenants"),
    ]
    for call in calls:
        with pytest.raises(ConfigError, match="has no partitions"):
            call()
    assert tier_manager.count("tenants") == len(HOSTILE) * len(TEXTS)


def test_partition_key_spec_checks() -> None:
    spec = CollectionSpec(dense_dim=8, partition_key="tenant", num_partitions=64)
    assert [f.name for f in spec.scalar_fields] == ["tenant"]
    assert CollectionSpec.from_json(json.loads(json.dumps(spec.to_json()))) == spec
    declared = CollectionSpec(
        dense_dim=8, partition_key="org", scalar_fields=(ScalarField(name="org", dtype="int64"),)
    )
    assert [f.dtype for f in declared.scalar_fields] == ["int64"]
    for bad in (
        {"num_partitions": 4},
        {"partition_key": "id"},
        {"partition_key": "t", "num_partitions": 0},
        {"partition_key": "t", "scalar_fields": (ScalarField(name="t", default="x"),)},
        {"partition_key": "t", "scalar_fields": (ScalarField(name="t", dtype="double"),)},
    ):
        with pytest.raises(ConfigError):
            CollectionSpec(dense_dim=8, **bad)


def test_a_server_schema_declares_the_partition_key() -> None:
    from milvus_m3.collection.schema import build_schema
    from milvus_m3.engine.capabilities import LITE_CAPABILITIES, server_capabilities

    spec = CollectionSpec(dense_dim=8, partition_key="tenant", num_partitions=64)
    server = {f.name: f for f in build_schema(spec, server_capabilities((2, 6, 0))).fields}
    lite = {f.name: f for f in build_schema(spec, LITE_CAPABILITIES).fields}
    assert server["tenant"].is_partition_key is True
    assert not lite["tenant"].is_partition_key  # Lite refuses filters on a partition key: a plain field


def test_ingest_with_a_tenant_field_and_search_with_tenant_by_the_cli(
    tmp_path: Path, tiny_checkpoint: Path
) -> None:
    docs = tmp_path / "docs.jsonl"
    rows = [
        {"text": "Milvus stores vectors.", "org": 'a"1'},
        {"text": "Milvus stores vectors.", "org": "b\\2"},  # the same text: two rows, hashed with the tenant
        {"text": "Bread rises.", "org": 'a"1'},
        {"text": "no tenant here"},
    ]
    docs.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    db = str(tmp_path / "cli.db")
    env_args = ["--uri", db, "--model", str(tiny_checkpoint)]
    run = [sys.executable, "-m", "milvus_m3"]
    out = subprocess.run(
        [
            *run,
            "ingest",
            str(docs),
            "--collection",
            "orgs",
            "--tenant-field",
            "org",
            "--json",
            "-q",
            *env_args,
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    report = json.loads(out.stdout)
    assert report["written"] == 3, report
    assert report["errors"][0]["error"].startswith("missing tenant")
    found = {}
    for tenant in ('a"1', "b\\2"):
        res = subprocess.run(
            [*run, "search", "vectors", "--collection", "orgs", "--tenant", tenant, "--json", *env_args],
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
        )
        hits = [json.loads(line) for line in res.stdout.splitlines()]
        assert {h["fields"]["org"] for h in hits} == {tenant}
        found[tenant] = len(hits)
    assert found == {'a"1': 2, "b\\2": 1}
