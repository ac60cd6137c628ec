"""The application layer (docs/architecture.md, "Layers"): the composition root above the pipeline
and the job store. It turns a spec into a prepared job and runs, prices or stores it."""
