"""Imported once by the job forkserver: everything a reversal_job run needs, built ahead.

``defs()`` imports the definitions folder and builds the job (about 3 s on the
CI machine); doing it here means each forked run starts with it done.
"""

from reversal_pipeline.definitions import defs
from reversal_pipeline.jobs_runner import run_reversal_job_once

JOB = defs().resolve_job_def("reversal_job")

__all__ = ["JOB", "run_reversal_job_once"]
