"""One spelling per serving setting: the fronts' flags, the client's JSON and the panel's checks
come from nbserve._settings, so they cannot drift apart."""

from __future__ import annotations

import argparse

import pytest

from nbserve._cli import build_parser as cli_parser
from nbserve._magic import build_parser as magic_parser
from nbserve._settings import (AUTOSCALING_KNOBS, BATCHING_KNOBS, SERVING_KNOBS, SERVING_SETTINGS, ReleasePlan,
                               autoscaling_flag, check_serving_json, knob_row, serving_arguments, serving_body)
from nbserve.errors import InvalidArgument

SERVING_FLAGS = ({knob.flag for knob in (*SERVING_KNOBS, *BATCHING_KNOBS)} | {"--batching", "--no-batching"}
                 | {autoscaling_flag(knob) for knob in AUTOSCALING_KNOBS} | {"--autoscaling", "--no-autoscaling",
                                                                             "--replicas"})


def _flags(parser: argparse.ArgumentParser) -> set[str]:
    return {flag for action in parser._actions for flag in action.option_strings}


def _subcommand(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices[name]
    raise AssertionError("no subcommands")


def test_magic_and_cli_take_the_same_serving_flags_and_give_the_same_arguments():
    magic, scale = magic_parser(), _subcommand(cli_parser(), "scale")
    assert SERVING_FLAGS <= _flags(magic) and SERVING_FLAGS <= _flags(scale)
    line = ["--workers", "2", "--memory", "1G", "--cpus", "1.5", "--idle-timeout", "15m", "--max-batch-size", "8"]
    from_magic = serving_arguments(magic.parse_args(["m", "--name", "n", "--sample", "s", *line]))
    from_cli = serving_arguments(scale.parse_args(["n", *line]))
    assert from_magic == from_cli == {"workers": 2, "memory": "1G", "cpus": "1.5", "idle_timeout": "15m",
                                      "batching": None, "max_batch_size": 8, "max_latency_ms": None,
                                      "replicas": None}
    assert serving_arguments(magic.parse_args(["m", "--no-batching"]))["batching"] is False
    # Ray's flags: one autoscaling mapping from its flags, on both fronts
    ray_line = ["--replicas", "3", "--min-replicas", "0", "--max-replicas", "4", "--downscale-delay", "30s"]
    for parsed in (magic.parse_args(["m", *ray_line]), scale.parse_args(["n", *ray_line])):
        found = serving_arguments(parsed)
        assert found["replicas"] == 3 and found["autoscaling"] == {"min": 0, "max": 4, "downscale_delay": "30s"}
    assert serving_arguments(scale.parse_args(["n", "--no-autoscaling"]))["autoscaling"] is False
    # what the client sends is what the agent takes
    assert set(serving_body(workers=1, memory="1G", cpus=1, idle_timeout="1m", batching=True,
                            autoscaling={"max": 2})) == set(SERVING_SETTINGS)


def test_serving_body_folds_batching_and_refuses_knobs_with_batching_off():
    assert serving_body() == {}
    assert serving_body(workers=2, max_latency_ms=20) == {"workers": 2, "batching": {"max_latency_ms": 20}}
    assert serving_body(batching=True) == {"batching": {}}
    assert serving_body(batching=False) == {"batching": False}
    with pytest.raises(InvalidArgument, match="need batching on"):
        serving_body(batching=False, max_batch_size=4)


def test_the_panels_scale_json_is_checked_field_by_field():
    assert check_serving_json({"workers": 2, "batching": {"max_batch_size": 8}}) == {
        "workers": 2, "max_batch_size": 8, "max_latency_ms": None}
    assert check_serving_json({"batching": {}}) == {"max_batch_size": None, "max_latency_ms": None, "batching": True}
    assert check_serving_json({"batching": False, "memory": None}) == {"batching": False}
    assert check_serving_json({"autoscaling": {"min": 0, "max": None}}) == {"autoscaling": {"min": 0}}
    assert check_serving_json({"autoscaling": False}) == {"autoscaling": False}
    for body, named in [({"workers": "2"}, "`workers` must be an integer"), ({"workers": True}, "`workers`"),
                        ({"replicas": 2}, "unknown setting"), ({"batching": {"size": 1}}, "`batching` takes"),
                        ({"batching": {"max_batch_size": 1.5}}, "`batching.max_batch_size`"),
                        ({"batching": "on"}, "`batching` must be"),
                        ({"autoscaling": {"most": 2}}, "`autoscaling` takes"),
                        ({"autoscaling": {"min": "0"}}, "`autoscaling.min` must be an integer"),
                        ({"autoscaling": 3}, "`autoscaling` must be")]:
        with pytest.raises(InvalidArgument, match=named):
            check_serving_json(body)


def test_a_release_plan_is_checked_where_it_is_made():
    assert ReleasePlan(canary=10).gradual and ReleasePlan(canary=10).canary == 10.0
    with pytest.raises(InvalidArgument, match="canary or shadow"):
        ReleasePlan(canary=5, shadow=True)
    with pytest.raises(InvalidArgument, match="percentage"):
        ReleasePlan(canary=0)


def test_the_rest_models_and_the_agents_checks_take_their_bounds_from_the_rows():
    from nbserve._agent._limits import parse_batching
    from nbserve._agent._rest.models import AutoscalingIn, BatchingIn, ScaleRequest
    from nbserve._agent._services.settings import check_serving

    for model, knobs in ((ScaleRequest, SERVING_KNOBS), (BatchingIn, BATCHING_KNOBS),
                         (AutoscalingIn, AUTOSCALING_KNOBS)):
        for knob in knobs:
            field = model.model_json_schema()["properties"][knob.name]
            bounded = [t for t in field["anyOf"] if "minimum" in t]
            assert [(t["minimum"], t["maximum"]) for t in bounded] == (
                [(knob.minimum, knob.maximum)] if knob.minimum is not None else [])
            assert field.get("description") == knob.api_description
    workers, rows = knob_row("workers"), knob_row("max_batch_size")
    assert workers.within(workers.maximum) and not workers.within(workers.maximum + 1)
    check_serving({"workers": workers.maximum})
    with pytest.raises(InvalidArgument, match=f"from 1 to {workers.maximum}"):
        check_serving({"workers": workers.maximum + 1})
    assert parse_batching({"max_batch_size": rows.maximum})["max_batch_size"] == rows.maximum
    with pytest.raises(InvalidArgument, match=f"from 1 to {rows.maximum}"):
        parse_batching({"max_batch_size": rows.maximum + 1})
