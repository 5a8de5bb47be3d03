"""Property-based: requests drawn from the live server's own OpenAPI schema (valid job configs,
and the same with wrong types, extra fields and junk) never get a 5xx, and every answer is a
job or a JSON error.

Generated jobs queue behind a long "blocker" job (max_jobs=1) and are cancelled at once, so
the run exercises validation and the queue without training hundreds of models.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)  # what JSON can carry
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


def from_schema(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """A strategy for the JSON-schema subset pydantic emits for the job request."""
    if "anyOf" in schema:
        return st.one_of([from_schema(s) for s in schema["anyOf"]])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if "const" in schema:
        return st.just(schema["const"])
    kind = schema.get("type")
    if kind == "null":
        return st.none()
    if kind == "boolean":
        return st.booleans()
    if kind == "integer":
        low = schema.get("minimum", schema.get("exclusiveMinimum", -(2**40) - 1) + 1)
        high = schema.get("maximum", schema.get("exclusiveMaximum", 2**40 + 1) - 1)
        return st.integers(low, high)
    if kind == "number":
        return st.floats(
            schema.get("minimum", schema.get("exclusiveMinimum")),
            schema.get("maximum", schema.get("exclusiveMaximum")),
            exclude_min="exclusiveMinimum" in schema,
            exclude_max="exclusiveMaximum" in schema,
            allow_nan=False,
            allow_infinity=False,
        )
    if kind == "string":
        return st.text(min_size=schema.get("minLength", 0), max_size=schema.get("maxLength", 50))
    if kind == "array":
        return st.lists(
            from_schema(schema.get("items", {})),
            min_size=schema.get("minItems", 0),
            max_size=min(schema.get("maxItems", 5), 5),
        )
    raise AssertionError(f"schema construct not covered: {schema}")


# Fields of one algorithm (any other takes them at their default only).
ALGORITHM_FIELDS = {"sync_every": "local-sgd", "warmup_steps": "local-sgd", "staleness": "async"}


def _consistent(body: dict[str, Any]) -> dict[str, Any]:
    """A body drawn field by field, with the fields that depend on each other made to agree:
    only its own algorithm's fields, and the synthetic dataset unless it names a data_dir (the
    test's service has no MNIST). Without this, too few drawn bodies were valid for the run to
    be sure of one."""
    algorithm = body.get("algorithm", "sync")
    fitted = {k: v for k, v in body.items() if ALGORITHM_FIELDS.get(k, algorithm) == algorithm}
    return fitted if "data_dir" in fitted else {**fitted, "dataset": "synthetic"}


def job_bodies(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    props = {name: from_schema(s) for name, s in schema["properties"].items()}
    valid = st.fixed_dictionaries({}, optional=props).map(_consistent)
    mangled = st.fixed_dictionaries(
        {}, optional={name: s | JSON for name, s in props.items()}
    ) | st.dictionaries(st.text(max_size=12), JSON, max_size=4)
    return valid | mangled | JSON


def test_no_request_from_the_schema_gets_a_5xx(service) -> None:
    svc = service(max_jobs=1)
    # Idle while it blocks: its only worker sleeps in its first step (stopped within ~50 ms).
    blocker = svc.submit(faults=["slow=600:worker=any@step=1"], step_timeout=3600, workers=1)
    schema = svc.client.get("/openapi.json").json()["components"]["schemas"]["JobRequest"]
    created: list[str] = []

    @settings(
        max_examples=200,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(body=job_bodies(schema), job_id=st.text(max_size=20), spec=JSON)
    def check(body: Any, job_id: str, spec: Any) -> None:
        r = svc.client.post("/jobs", json=body)
        assert r.status_code < 500, (body, r.text)
        if r.status_code == 201:
            job = r.json()
            assert job["state"] == "queued"
            created.append(job["id"])
            faulted = svc.client.post(f"/jobs/{job['id']}/faults", json={"spec": spec})
            assert faulted.status_code in (409, 422), faulted.text
            assert svc.client.post(f"/jobs/{job['id']}/cancel").json()["state"] == "cancelled"
        else:
            assert r.status_code in (400, 422), r.text
            assert r.json()["error"]
        for path in (f"/jobs/{job_id}", f"/jobs/{job_id}/report", f"/jobs/{job_id}/model"):
            got = svc.client.get(quote(path, safe="/"))
            assert got.status_code < 500, (path, got.text)

    check()
    assert created, "no valid job was generated: the strategy is broken"
    assert svc.job(blocker)["state"] == "running"
    svc.client.post(f"/jobs/{blocker}/cancel")
    assert svc.wait(blocker)["state"] == "cancelled"
    assert svc.client.get("/healthz").json()["jobs"]["cancelled"] == len(created) + 1
