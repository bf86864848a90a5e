"""Benchmarks behind ``scripts/bench.py``: Lightning overhead, norm cost, training throughput, data pipeline
and sweep cost, each as a table whose ratios come from variants measured side by side in one process."""
