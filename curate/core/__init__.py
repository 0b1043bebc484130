"""Shared machinery: atomic writes, the pool, the one image reader, grid renderer, HTTP client, settings and errors."""
