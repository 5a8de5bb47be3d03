"""Shared fixtures for trainer tests: a small synthetic problem and its reference checksum."""

from __future__ import annotations

import pytest
from training_support import config, dataset, reference_sha, run_job

from otpnn.data import Dataset


@pytest.fixture(scope="session")
def fault_free_sha() -> str:
    """Checksum of the serial reference for the base config: what every run must end with."""
    return reference_sha()


@pytest.fixture(name="config")
def config_fixture():
    return config


@pytest.fixture(name="run_job")
def run_job_fixture():
    return run_job


@pytest.fixture(name="reference_sha")
def reference_sha_fixture():
    return reference_sha


@pytest.fixture(name="training_dataset")
def training_dataset_fixture() -> Dataset:
    return dataset()
