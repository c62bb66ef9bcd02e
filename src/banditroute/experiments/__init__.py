"""End-to-end experiments on real data, each a function the CLI calls and `make bench-*` runs."""
