"""qssm: run trained quantum state-space sequence models on simulators and cloud QPUs.

The Python API (qssm/api.py) is imported on first use, so `import qssm` and the command line
stay light:

    import qssm
    out = qssm.run("examples/demo.toml", n=8)
    out.logits, out.report["accuracy"]
"""

from qssm.version import __version__ as __version__

_API = {"Inference", "Job", "JobSpec", "QssmError", "estimate", "job", "load", "logits", "prepare", "run", "spec",
        "submit"}


def __getattr__(name: str):
    if name in _API:
        from qssm import api  # lazy: the API loads torch and Qiskit, the command line does not need them

        return getattr(api, name)
    raise AttributeError(f"module 'qssm' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(_API | {"__version__"})
