"""Run options are resolved and checked in one place (otpnn.training.options.resolve), the same
for the CLI, the service and the Python API; every refusal is a UsageError before anything runs."""

from __future__ import annotations

import pytest
from training_support import config, dataset

from otpnn.errors import OtpnnError, UsageError
from otpnn.faults import parse_fault
from otpnn.training import JobOptions, OptionsError, TrainingJob, resolve
from otpnn.training.drivers import lockstep_rank


@pytest.mark.parametrize(
    ("backend", "wish", "protocol"),
    [
        ("thread", "stepwise", "stepwise"),
        ("process", "stepwise", "stepwise"),
        ("ray", "stepwise", "stepwise"),
        ("ray", "auto", "stepwise"),
        ("thread", "lockstep", "lockstep"),
    ],
)
def test_the_protocol_comes_from_the_backend_and_the_wish(backend, wish, protocol) -> None:
    if protocol == "lockstep" and not lockstep_rank.SUPPORTED:
        pytest.skip("the lockstep barrier needs x86-64")
    plan = resolve(config(workers=2, backend=backend), JobOptions(protocol=wish))
    assert (plan.workers, plan.protocol) == (2, protocol)


def test_auto_is_lockstep_where_the_barrier_works() -> None:
    plan = resolve(config(backend="process"), JobOptions())
    assert plan.protocol == ("lockstep" if lockstep_rank.SUPPORTED else "stepwise")


@pytest.mark.parametrize(
    ("overrides", "options", "message"),
    [
        ({"backend": "ray"}, JobOptions(protocol="lockstep"), "needs shared memory"),
        ({}, JobOptions(protocol="telepathy"), "unknown protocol 'telepathy'"),
        ({"workers": 2}, JobOptions(faults=(parse_fault("crash:worker=2@step=1"),)), "0..1"),
        ({"backend": "thread"}, JobOptions(ray_address="h:6379"), "--ray-address needs"),
        ({}, JobOptions(resume=True), "--resume needs --checkpoint-dir"),
    ],
)
def test_misfits_are_one_usage_error_naming_them(overrides, options, message) -> None:
    with pytest.raises(OptionsError, match=message) as refused:
        resolve(config(**overrides), options)
    assert isinstance(refused.value, UsageError)


def test_the_python_api_refuses_what_the_cli_refuses_before_starting_anything() -> None:
    options = JobOptions(faults=(parse_fault("kill:worker=3@step=1"),))
    with pytest.raises(UsageError, match=r"this job has workers 0\.\.1"):
        TrainingJob(config(workers=2, backend="thread"), dataset(), options)


def test_a_running_jobs_fault_is_checked_by_the_same_rule() -> None:
    job = TrainingJob(config(workers=2, backend="thread"), dataset())
    with pytest.raises(OptionsError, match=r"this job has workers 0\.\.1"):
        job.inject(parse_fault("crash:worker=2@step=1"))


def test_every_app_error_has_one_root() -> None:
    """A caller catches OtpnnError (or UsageError for bad input) instead of a long tuple."""
    from otpnn.checkpoint import CheckpointError
    from otpnn.compare import ReportError
    from otpnn.config import ConfigError
    from otpnn.data import DataError
    from otpnn.faults import FaultSpecError
    from otpnn.interchange import InterchangeError
    from otpnn.training import (
        ClusterUnreachable,
        JobStopped,
        JobTooLarge,
        ResumeError,
        TrainingFailed,
    )

    usage = (CheckpointError, ConfigError, DataError, FaultSpecError, InterchangeError,
             ReportError, ClusterUnreachable, JobTooLarge, ResumeError, OptionsError)  # fmt: skip
    assert all(issubclass(e, UsageError) for e in usage)
    assert all(issubclass(e, OtpnnError) for e in (*usage, TrainingFailed, JobStopped))
    assert not issubclass(TrainingFailed, UsageError)
