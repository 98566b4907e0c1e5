"""The benchmark suite of ecf_engine: `python -m benchmarks COMMAND` (see __main__.py).
Every command writes its JSON (and a PNG where a plot says more) under benchmarks/results/."""
