import dataclasses
import json
import os

import pytest

from otpnn.config import ConfigError, TrainConfig


def test_defaults_and_derived_values():
    cfg = TrainConfig()
    assert cfg.layer_sizes == (784, 128, 64, 10)
    assert TrainConfig(batch_size=64, shard_size=64).effective_shard_size == 64
    assert TrainConfig(batch_size=64, shard_size=5).effective_shard_size == 5


@pytest.mark.parametrize(
    ("cores", "batch", "shard"),
    [
        (2, 1, 1), (2, 10, 10), (2, 32, 32), (2, 64, 32), (2, 100, 50), (2, 256, 128),
        (2, 1000, 500), (1, 256, 128), (4, 64, 32), (4, 129, 33), (4, 256, 64), (8, 256, 32),
        (16, 256, 32), (16, 1024, 64),
    ],
)  # fmt: skip
def test_default_shard_is_one_per_core_of_at_least_32_rows(monkeypatch, cores, batch, shard):
    """One shard per core the process may use (at least two shards), never under 32 rows."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(cores)))
    assert TrainConfig(batch_size=batch).effective_shard_size == shard


@pytest.mark.parametrize("algorithm", ["local-sgd", "async"])
@pytest.mark.parametrize("cores", [1, 2, 16])
def test_default_shard_of_local_sgd_and_async_is_the_whole_batch(monkeypatch, algorithm, cores):
    """One worker computes a whole batch there: one shard, whatever the machine."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(cores)))
    assert TrainConfig(batch_size=256, algorithm=algorithm).effective_shard_size == 256
    given = TrainConfig(batch_size=256, algorithm=algorithm, shard_size=16)
    assert given.effective_shard_size == 16


def test_dict_round_trip_is_json_friendly():
    cfg = TrainConfig(hidden=(32,), dataset="synthetic", lr=0.5, workers=2)
    d = json.loads(json.dumps(cfg.to_dict()))
    assert d["hidden"] == [32]
    assert TrainConfig.from_dict(d) == cfg


def test_from_dict_rejects_unknown_fields():
    with pytest.raises(ConfigError, match=r"unknown config field\(s\) 'learning_rate'"):
        TrainConfig.from_dict({"learning_rate": 0.1})


@pytest.mark.parametrize(
    ("field", "value", "allowed"),
    [
        ("dataset", "cifar", "one of 'mnist', 'synthetic'"),
        ("epochs", 0, "integer >= 1"),
        ("epochs", 2.5, "integer >= 1"),
        ("batch_size", True, "integer >= 1"),
        ("shard_size", 0, "integer >= 1"),
        ("shard_size", 65, "at most batch_size"),
        ("lr", 0.0, "> 0.0"),
        ("lr", float("nan"), "finite number"),
        ("momentum", 1.0, "< 1.0"),
        ("weight_decay", -1e-4, ">= 0.0"),
        ("hidden", (128, 0), "positive integers"),
        ("activation", "tanh", "'relu', 'sigmoid'"),
        ("dtype", "float16", "'float32', 'float64'"),
        ("workers", 0, "integer >= 1"),
        ("backend", "gpu", "'thread', 'process', 'ray'"),
        ("seed", -1, "integer >= 0"),
        ("synthetic_train", 0, "integer >= 1"),
        ("checkpoint_every", -1, "integer >= 0"),
        ("data_dir", 5, "directory path"),
    ],
)
def test_validation_names_field_value_and_what_is_allowed(field, value, allowed):
    with pytest.raises(ConfigError) as err:
        TrainConfig(**{field: value})
    msg = str(err.value)
    assert msg.startswith(f"invalid {field}={value!r}")
    assert allowed in msg
    assert isinstance(err.value, ValueError)


def test_hidden_list_becomes_tuple_and_config_is_frozen():
    cfg = TrainConfig.from_dict({"hidden": [8, 4]})
    assert cfg.hidden == (8, 4)
    with pytest.raises(AttributeError):
        cfg.lr = 1.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("fields", "field", "value", "allowed"),
    [
        ({"lr_schedule": "linear"}, "lr_schedule", "linear", "'constant', 'step', 'cosine'"),
        ({"lr_schedule": "step", "lr_step_epochs": 0}, "lr_step_epochs", 0, "integer >= 1"),
        ({"lr_schedule": "step", "lr_gamma": 0.0}, "lr_gamma", 0.0, "> 0.0"),
        ({"lr_schedule": "step", "lr_gamma": 1.5}, "lr_gamma", 1.5, "<= 1.0 (a decay)"),
        ({"lr_schedule": "step", "lr_gamma": float("nan")}, "lr_gamma", float("nan"), "finite"),
        ({"lr_schedule": "cosine", "lr_min": -0.1}, "lr_min", -0.1, ">= 0.0"),
        ({"lr_schedule": "cosine", "lr_min": 0.5}, "lr_min", 0.5, "at most lr (0.2)"),
        ({"lr_warmup_steps": -1}, "lr_warmup_steps", -1, "integer >= 0"),
        (
            {"lr_schedule": "constant", "lr_gamma": 0.5},
            "lr_gamma",
            0.5,
            "applies to lr_schedule 'step' only",
        ),
        (
            {"lr_schedule": "cosine", "lr_step_epochs": 3},
            "lr_step_epochs",
            3,
            "applies to lr_schedule 'step' only",
        ),
        ({"lr_schedule": "step", "lr_min": 0.1}, "lr_min", 0.1, "lr_schedule 'cosine' only"),
        ({"val_split": 0}, "val_split", 0, "a fraction > 0 and < 1"),
        ({"val_split": 0.0}, "val_split", 0.0, "or a row count >= 1"),
        ({"val_split": 1.0}, "val_split", 1.0, "a fraction > 0 and < 1"),
        ({"val_split": -0.1}, "val_split", -0.1, "a fraction > 0 and < 1"),
        ({"val_split": -5}, "val_split", -5, "a fraction > 0 and < 1"),
        ({"val_split": float("nan")}, "val_split", float("nan"), "a fraction > 0 and < 1"),
        ({"val_split": "0.1"}, "val_split", "0.1", "a fraction > 0 and < 1"),
        ({"keep_best": True}, "keep_best", True, "false without val_split"),
        ({"val_split": 0.1, "keep_best": 1}, "keep_best", 1, "true or false"),
    ],
)
def test_schedule_and_split_values_get_one_clear_message(fields, field, value, allowed):
    with pytest.raises(ConfigError) as err:
        TrainConfig(**fields)
    msg = str(err.value)
    assert msg.startswith(f"invalid {field}={value!r}")
    assert allowed in msg


def test_schedule_and_split_fields_round_trip_through_json():
    cfg = TrainConfig(
        lr_schedule="cosine", lr_min=0.01, lr_warmup_steps=10, val_split=500, keep_best=True
    )
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert TrainConfig.from_dict({"val_split": 0.25}).val_split == 0.25


def test_without_affinity_the_default_shard_follows_the_cpu_count(monkeypatch):
    """macOS has no sched_getaffinity: the machine's CPU count stands in for it."""
    monkeypatch.delattr(os, "sched_getaffinity")
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    assert TrainConfig(batch_size=256).effective_shard_size == 64
    monkeypatch.setattr(os, "cpu_count", lambda: None)  # unknown: two shards
    assert TrainConfig(batch_size=256).effective_shard_size == 128


@pytest.mark.parametrize(
    ("fields", "momentum", "warmup"),
    [
        ({}, 0.5, 0),
        ({"algorithm": "local-sgd", "sync_every": 16}, 0.5, 0),
        ({"algorithm": "async", "staleness": 1}, 0.5, 0),  # sync SGD, so sync's defaults
        ({"algorithm": "async"}, 0.0, 100),
        ({"algorithm": "async", "staleness": 4}, 0.0, 300),
    ],
)
def test_momentum_and_warmup_default_to_the_algorithms(fields, momentum, warmup):
    """Unnamed, they take the algorithm's values (async: no momentum, a warm-up growing with
    the staleness); the config holds those values, so its record reproduces the run."""
    cfg = TrainConfig(**fields)
    assert (cfg.lr, cfg.momentum, cfg.lr_warmup_steps) == (0.2, momentum, warmup)
    record = cfg.to_record()
    assert (record["momentum"], record["lr_warmup_steps"]) == (momentum, warmup)
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert TrainConfig(**{**fields, "momentum": None, "lr_warmup_steps": None}) == cfg


@pytest.mark.parametrize("algorithm", ["sync", "local-sgd", "async"])
def test_an_explicit_momentum_or_warmup_wins_over_the_algorithms_default(algorithm):
    for momentum, warmup in ((0.0, 0), (0.5, 0), (0.9, 7)):
        cfg = TrainConfig(algorithm=algorithm, momentum=momentum, lr_warmup_steps=warmup)
        assert (cfg.momentum, cfg.lr_warmup_steps) == (momentum, warmup)


def test_a_replaced_config_keeps_its_values_unless_asked_for_the_new_algorithms():
    sync = TrainConfig()
    carried = dataclasses.replace(sync, algorithm="async", staleness=4)
    assert (carried.momentum, carried.lr_warmup_steps) == (0.5, 0)
    fresh = dataclasses.replace(carried, momentum=None, lr_warmup_steps=None)
    assert fresh == TrainConfig(algorithm="async", staleness=4)


def test_an_invalid_staleness_is_named_before_any_default_is_taken_from_it():
    for staleness in (0, "x", None):
        with pytest.raises(ConfigError, match=f"invalid staleness={staleness!r}"):
            TrainConfig(algorithm="async", staleness=staleness)
