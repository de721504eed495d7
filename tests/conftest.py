"""Shared fixtures live in small plugin modules, one per area, so parallel work does not collide."""

pytest_plugins = [
    "tests.fixtures_model",
    "tests.fixtures_milvus",
    "tests.fixtures_server",
    "tests.fixtures_ray",
]
