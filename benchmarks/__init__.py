"""Benchmarks run by ``make bench`` (``python -m benchmarks``).

Each module ``benchmarks/bench_<name>.py`` exposes ``main(argv=())``: called with no arguments it
runs its default workload and prints Markdown tables of *ratios measured side by side in one
process* (never absolute times alone). ``python -m benchmarks.bench_<name> --help`` lists a
module's own options.
"""
