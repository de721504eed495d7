"""docker/docker-compose.yml: validated by docker-compose where installed, and always by reading the YAML.

No Docker engine runs here; `docker-compose config` checks the file against the Compose schema (Debian's
docker-compose 1.29 is stricter than Compose v2 about top-level keys, so passing it means both take it).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker" / "docker-compose.yml"
README = ROOT / "docker" / "README.md"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _version(tag: str) -> tuple[int, ...]:
    m = re.fullmatch(r"v(\d+)\.(\d+)\.(\d+)", tag)
    assert m, f"milvus image tag {tag!r} is not a release tag vX.Y.Z"
    return tuple(int(g) for g in m.groups())


def test_services_images_are_pinned(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"etcd", "minio", "standalone"}
    for name, svc in services.items():
        image = svc["image"]
        repo, _, tag = image.rpartition(":")
        assert repo and tag and tag != "latest" and "@" not in tag, f"{name}: image {image!r} is not pinned"
    repo, _, tag = services["standalone"]["image"].rpartition(":")
    assert repo == "milvusdb/milvus"
    # 2.6 or newer: sparse vectors, hybrid search, filter templates and BM25 functions.
    assert _version(tag) >= (2, 6, 0)
    assert services["standalone"]["command"] == ["milvus", "run", "standalone"]


def test_ports_health_checks_and_dependencies(compose: dict[str, Any]) -> None:
    services = compose["services"]
    ports = {str(p) for p in services["standalone"]["ports"]}
    assert ports == {"19530:19530", "9091:9091"}
    assert "ports" not in services["etcd"] and "ports" not in services["minio"]
    for name, svc in services.items():
        check = svc["healthcheck"]
        assert check["test"][0] == "CMD" and check["interval"] and check["retries"] >= 1, name
    assert "http://localhost:9091/healthz" in services["standalone"]["healthcheck"]["test"]
    deps = services["standalone"]["depends_on"]
    assert deps == {"etcd": {"condition": "service_healthy"}, "minio": {"condition": "service_healthy"}}
    env = services["standalone"]["environment"]
    assert env["ETCD_ENDPOINTS"] == "etcd:2379" and env["MINIO_ADDRESS"] == "minio:9000"


def test_named_volumes(compose: dict[str, Any]) -> None:
    declared = set(compose["volumes"])
    used = set()
    for svc in compose["services"].values():
        for vol in svc["volumes"]:
            source = str(vol).split(":", 1)[0]
            assert not source.startswith((".", "/")), f"bind mount {vol!r}: use a named volume"
            used.add(source)
    assert used == declared == {"etcd-data", "minio-data", "milvus-data"}


def test_authentication_is_documented_but_off() -> None:
    text = COMPOSE.read_text(encoding="utf-8")
    assert re.search(r"^\s*# COMMON_SECURITY_AUTHORIZATIONENABLED: \"true\"", text, flags=re.MULTILINE)
    assert re.search(r"^\s*# - \./user\.yaml:/milvus/configs/user\.yaml:ro", text, flags=re.MULTILINE)
    user = yaml.safe_load((ROOT / "docker" / "user.yaml").read_text(encoding="utf-8"))
    assert user is None  # every setting is commented out
    assert "authorizationEnabled: true" in (ROOT / "docker" / "user.yaml").read_text(encoding="utf-8")


def test_readme_says_how_to_start_connect_stop_and_wipe() -> None:
    text = README.read_text(encoding="utf-8")
    for needle in (
        "docker compose -f docker/docker-compose.yml up -d",
        "--uri http://localhost:19530",
        "docker compose -f docker/docker-compose.yml down -v",
        "docker compose -f docker/docker-compose.yml stop",
    ):
        assert needle in text, needle
    tag = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))["services"]["standalone"]["image"]
    assert tag in text  # the README names the pinned image


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose is not installed")
def test_docker_compose_config_accepts_the_file() -> None:
    out = subprocess.run(
        ["docker-compose", "-f", str(COMPOSE), "config"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    resolved = yaml.safe_load(out.stdout)
    assert set(resolved["services"]) == {"etcd", "minio", "standalone"}
    assert set(resolved["volumes"]) == {"etcd-data", "minio-data", "milvus-data"}


def test_tls_paths_are_under_a_volume_the_comments_mount() -> None:
    """Every certificate path of docker/user.yaml lies under the container side of a volume line of
    the compose file (commented out, as TLS is off by default), and that volume's host side exists in
    the comments' instructions (docker/tls)."""
    compose = COMPOSE.read_text(encoding="utf-8")
    mounts = re.findall(r"^\s*# - (\./[\w.-]+):(/[\w/.-]+)(?::ro)?\s*$", compose, flags=re.MULTILINE)
    targets = {target: source for source, target in mounts}
    assert "/milvus/tls" in targets and targets["/milvus/tls"] == "./tls"
    user = (ROOT / "docker" / "user.yaml").read_text(encoding="utf-8")
    paths = re.findall(r"(?:serverPemPath|serverKeyPath|caPemPath):\s*(/\S+)", user)
    assert len(paths) == 3
    for path in paths:
        assert any(path.startswith(t + "/") for t in targets), (
            f"{path} is under no volume of the compose file"
        )
    assert "docker/tls/" in compose and "--server-pem" in compose and "--ca-pem" in compose
