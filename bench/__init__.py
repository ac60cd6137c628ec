"""qssm's measurements, split by what they are for (docs/architecture.md, "bench/"):

    bench.speed        timings: the ratio table (`python -m bench`, `make bench`), CLI start-up,
                       the density-matrix engine, Dask, training throughput
    bench.experiments  accuracy and cost studies behind the README's tables
    bench.generate     generators of data the product ships: the auto-split frontier
                       (qssm/app/qlam_frontier.json) and the README's model card and paper table
    bench.harness      what they share: paths, timing, the results table, one job run

Every script runs from the repository root as a module, e.g. `python -m bench.speed.cli_startup`;
its JSON results sit next to it.
"""
