"""Prometheus metrics, read from the JobManager at scrape time (nothing to keep in sync)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

if TYPE_CHECKING:
    from otpnn.service.jobs import JobManager

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def actor_kind(actor: str) -> str:
    """``worker-3`` -> ``worker``: restarts are counted per kind of actor, not per index."""
    return re.sub(r"-\d+$", "", actor)


class JobCollector:
    def __init__(self, manager: JobManager) -> None:
        self.manager = manager

    def collect(self) -> Iterator[Metric]:
        jobs = self.manager.jobs()
        by_state = GaugeMetricFamily("otpnn_jobs", "Jobs by state.", labels=["state"])
        for state, n in self.manager.counts().items():
            by_state.add_metric([state], n)
        yield by_state

        steps = CounterMetricFamily("otpnn_steps", "Optimisation steps done, all jobs.")
        steps.add_metric([], sum(j["step"] for j in jobs))
        yield steps

        job_step = GaugeMetricFamily(
            "otpnn_job_step", "Current step of a running job.", labels=["job_id"]
        )
        speed = GaugeMetricFamily(
            "otpnn_job_samples_per_second",
            "Training speed of a running job's last finished epoch.",
            labels=["job_id"],
        )
        restarts: dict[str, int] = {}
        faults = 0
        for j in jobs:
            faults += j["faults_injected"]
            for actor, n in j["restarts_by_actor"].items():
                restarts[actor_kind(actor)] = restarts.get(actor_kind(actor), 0) + n
            if j["state"] != "running":
                continue
            job_step.add_metric([j["id"]], j["step"])
            if j["metrics"]:
                speed.add_metric([j["id"]], j["metrics"]["samples_per_second"])
        yield job_step
        yield speed

        by_kind = CounterMetricFamily(
            "otpnn_restarts", "Actor restarts, all jobs, by actor kind.", labels=["actor_kind"]
        )
        for kind, n in sorted(restarts.items()):
            by_kind.add_metric([kind], n)
        yield by_kind

        injected = CounterMetricFamily("otpnn_faults_injected", "Faults that fired, all jobs.")
        injected.add_metric([], faults)
        yield injected


def registry_for(manager: JobManager) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(JobCollector(manager))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
