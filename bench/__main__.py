"""`python -m bench` (and `make bench`): the speed suite's table of ratios (bench/speed/suite.py)."""

from bench.speed.suite import main

if __name__ == "__main__":
    main()
