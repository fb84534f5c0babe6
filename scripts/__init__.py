"""Benchmarks and experiments; `python -m scripts.four_cases` runs the four-cases experiment from the repository root."""
