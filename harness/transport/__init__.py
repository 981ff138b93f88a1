"""Thin asyncio adapters around sans-I/O protocol cores."""
