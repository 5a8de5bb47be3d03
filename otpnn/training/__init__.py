"""Training jobs: what a program that trains with otpnn imports.

::

    from otpnn.training import JobOptions, TrainingJob

    result = TrainingJob(config, dataset, JobOptions(faults=...)).run()

Every error raised on purpose is an :class:`~otpnn.errors.OtpnnError`: a
:class:`~otpnn.errors.UsageError` for bad input (config, data, checkpoint, options), a
:class:`TrainingFailed` when the supervision tree gave up, :class:`JobStopped` after a stop
request. The layout of the package (the tree, the coordinator, one driver per protocol) is
described in README.md.
"""

from otpnn.errors import JobStopped, OtpnnError, TrainingFailed, UsageError
from otpnn.training.job import ClusterUnreachable, TrainingJob
from otpnn.training.memory import JobTooLarge
from otpnn.training.options import PROTOCOLS, JobOptions, OptionsError, RunPlan, resolve
from otpnn.training.report import final_summary, job_report, write_report
from otpnn.training.resume_point import CHECKPOINT_FILE, ResumeError
from otpnn.training.state import Event, Progress

__all__ = [
    "CHECKPOINT_FILE",
    "PROTOCOLS",
    "ClusterUnreachable",
    "Event",
    "JobOptions",
    "JobStopped",
    "JobTooLarge",
    "OptionsError",
    "OtpnnError",
    "Progress",
    "ResumeError",
    "RunPlan",
    "TrainingFailed",
    "TrainingJob",
    "UsageError",
    "final_summary",
    "job_report",
    "resolve",
    "write_report",
]
