"""Benchmark scripts that print their figures (run each with ``python -m benchmark.perf.<name>``)."""


def save_json(results, path) -> None:
    """Write a benchmark's results as indented JSON to ``path`` (nothing when ``path`` is empty)."""
    import json

    if path:
        with open(path, "w") as fh:
            json.dump(results, fh, indent=2)
