"""The repository's scripts; as a package, the benchmark (:mod:`scripts.bench`) imports its neighbours.

Run from the repository's root: ``uv run python -m scripts.bench``.
"""
