"""Keeps tests out of the real cache (pyproject's `pythonpath` puts the repository root and tests/ on the path)."""

import pytest


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Every test gets its own feature store, so none can touch the user's cache/."""
    monkeypatch.setenv("PIPELINE_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def store_every_program(monkeypatch):
    """Commands store every compiled program, however fast it compiled, so a test of the compile cache does not
    depend on how fast this machine's XLA is (a fast CI machine compiled a small head in under 0.1 s)."""
    import pipeline.compile_cache

    monkeypatch.setattr(pipeline.compile_cache, "MIN_COMPILE_SECS", 0.0)
