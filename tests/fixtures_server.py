"""Milvus gRPC server fixtures (filled in by the server tier)."""
