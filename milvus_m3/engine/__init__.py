"""The engine: connecting to Milvus (Lite or a server), retries, the Lite file lock, and capabilities
(what the engine can do and its quirks, named once). Nothing is imported here: ``engine.capabilities``
stays free of pymilvus."""

__all__: list[str] = []
