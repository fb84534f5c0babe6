"""Running past one process: extraction and independent runs on a Ray cluster (optional extra `ray`)."""

from pipeline.cluster.engine import ENGINES, RayEngine, resolve_engine

__all__ = ["ENGINES", "RayEngine", "resolve_engine"]
