"""Run or resume one stored job in a fresh process (for kill and concurrency tests):
python tests/job_driver.py STORE JOB_ID FAKE_ROOT [braket:<device>]

IBM jobs go through runtime local mode behind fake_ibm's persisted service; a braket:<device>
argument runs the job on that Braket QPU path over fake_aws's task transport instead. The fakes'
faults come from $QSSM_FAKE_IBM / $QSSM_FAKE_AWS; $QSSM_TEST_MAX_EXEC shrinks IBM's executions per job."""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import fake_ibm  # noqa: E402

from qssm.app.durable import run_job  # noqa: E402
from qssm.errors import QssmError  # noqa: E402
from qssm.jobs.store import JobStore  # noqa: E402

if __name__ == "__main__":
    store_path, job_id, root = sys.argv[1:4]
    fake_ibm.install(root)
    if os.environ.get("QSSM_TEST_MAX_EXEC"):  # small IBM job chunks: several provider jobs per batch
        import qssm.backends.ibm as ibm

        ibm.MAX_EXECUTIONS_PER_JOB = int(os.environ["QSSM_TEST_MAX_EXEC"])
    backend = None
    if len(sys.argv) > 4:
        from fake_aws import FakeAwsSession

        from qssm.backends.braket import BraketBackend

        Path(root).mkdir(parents=True, exist_ok=True)
        backend = BraketBackend(sys.argv[4], seed=1, aws_session=FakeAwsSession(root, "eu-north-1"))
    try:
        report = run_job(JobStore(store_path), job_id, backend=backend)
    except QssmError as e:
        print(f"qssm: error: {e}", file=sys.stderr)
        sys.exit(2)
    print(report.get("logit_error_mean", "cancelled: partial result"))
