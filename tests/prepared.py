"""What dispatch would receive for one template on one backend (compiled, measured), and the way
back from a backend's raw result to values: for tests that drive a backend's submit/result directly."""

from __future__ import annotations

from qssm.pipeline.compile import Compile
from qssm.pipeline.measure import Measure
from qssm.pipeline.plan import make_batch
from qssm.pipeline.stages import Pipeline


class Prepared:
    def __init__(self, t, backend, rows, shots):
        self.pipeline = Pipeline([Compile(backend), Measure(backend)], backend.run, backend=backend)
        self.planned = make_batch(t, rows, shots)
        [self.batch], self.posts = self.pipeline.transform([self.planned])

    def values(self, result):
        """A raw result of `self.batch` -> the planned batch's values (rows in `planned.parameters` order)."""
        results = [result]
        for _, post in reversed(self.posts):
            results = post(results)
        return results[0]

    def run(self):
        return self.values(self.pipeline.backend.run([self.batch])[0])
