"""Run or resume one stored job in a fresh process (for kill and concurrency tests):
python tests/job_driver.py STORE JOB_ID FAKE_IBM_ROOT"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import fake_ibm  # noqa: E402

from qssm.errors import QssmError  # noqa: E402
from qssm.jobs.run import run_job  # noqa: E402
from qssm.jobs.store import JobStore  # noqa: E402

if __name__ == "__main__":
    store_path, job_id, root = sys.argv[1:4]
    fake_ibm.install(root)
    try:
        report = run_job(JobStore(store_path), job_id)
    except QssmError as e:
        print(f"qssm: error: {e}", file=sys.stderr)
        sys.exit(2)
    print(report["logit_error_mean"])
