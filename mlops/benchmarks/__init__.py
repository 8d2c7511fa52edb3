"""External benchmarks: the project's trainers measured on public data that never enters ``data/``."""
