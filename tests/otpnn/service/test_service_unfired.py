"""A service job whose planned faults never fired tested nothing: it ends failed, saying so,
unless its request allowed it (as ``otpnn train`` exits 3 without --allow-unfired-faults)."""

from __future__ import annotations

NEVER = "crash:worker=1@step=99999"  # past the job's end


def test_a_job_whose_faults_never_fired_is_failed_naming_them(service, fault_free_sha) -> None:
    svc = service()
    status = svc.wait(svc.submit(faults=[NEVER]))
    assert status["state"] == "failed"
    assert f"1 planned fault(s) never fired: {NEVER}" in status["error"]
    assert status["final"]["params_sha256"] == fault_free_sha  # it did train
    report = svc.client.get(f"/jobs/{status['id']}/report").json()
    assert report["faults"]["unfired"] == [NEVER]


def test_allowed_unfired_faults_leave_the_job_succeeded(service, fault_free_sha) -> None:
    svc = service()
    status = svc.wait(svc.submit(faults=[NEVER], allow_unfired_faults=True))
    assert status["state"] == "succeeded"
    assert status["final"]["params_sha256"] == fault_free_sha
