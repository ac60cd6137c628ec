"""Speed benchmarks: wall-clock timings and ratios measured side by side in one run."""
