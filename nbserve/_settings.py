"""Settings both sides speak: how a version meets traffic and how it is served.

One spelling per setting. The client API (``deploy``, ``Deployment.scale``), ``%deploy``, the
CLI and the panel's server extension take their flags, help texts and JSON checks from the rows
here; the agent imports the same ``ReleasePlan``, ``workers_option`` and rows: its REST models take
their bounds and descriptions from them (``_agent/_rest/models.py``), and it validates the values
once (``_agent/_services/settings.py``, ``_agent/_limits.py``) against the same bounds. A new
serving knob is one row here and one check there.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass
from typing import Any

from .errors import InvalidArgument

__all__ = ["AUTOSCALING_KNOBS", "BATCHING_KNOBS", "DEPLOY_SETTINGS", "ENGINES", "engine_named", "SERVING_KNOBS", "SERVING_SETTINGS",
           "ReleasePlan", "Setting", "add_serving_flags", "check_serving_json", "knob_row", "serving_arguments",
           "serving_body", "workers_option"]


@dataclass(frozen=True)
class Setting:
    """One serving knob: its keyword argument (and JSON field), its flag's type and help, the
    JSON types the panel's requests may give it, and the bounds and description of its field in
    the agent's REST API (the agent checks the values against the same bounds)."""

    name: str
    flag_type: type
    help: str  # the flag's; "{minimum}" and "{maximum}" stand for the bounds
    json_types: tuple[type, ...]
    json_text: str
    minimum: int | None = None  # None: no static bound (a size, a duration, a host's cores)
    maximum: int | None = None
    api_description: str | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def flag_help(self) -> str:
        """The help text with its bounds filled in (``{minimum}``, ``{maximum}``)."""
        return self.help.format(minimum=self.minimum, maximum=self.maximum)

    @property
    def bounds_text(self) -> str:
        """The bounds as error messages give them, e.g. ``from 1 to 64``."""
        return f"from {self.minimum} to {self.maximum}"

    def within(self, value: float) -> bool:
        """Whether a number lies inside the bounds (a bound not set does not limit it)."""
        return ((self.minimum is None or value >= self.minimum)
                and (self.maximum is None or value <= self.maximum))


SERVING_KNOBS = (
    Setting("workers", int, "BentoML worker processes behind the stable URL ({minimum} to {maximum})", (int,),
            "an integer", minimum=1, maximum=64),
    Setting("memory", str, 'a cap on the server\'s processes, such as "1G"; "none" removes it', (str, int),
            'a size such as "1G" (or bytes) or "none"', api_description='a cap such as "1G"; "none" removes it'),
    Setting("cpus", str, 'a cap in cores, e.g. 1.5; "none" removes it', (int, float, str),
            'a number of cores or "none"', api_description='cores, e.g. 1.5; "none" removes the cap'),
    Setting("idle_timeout", str, 'scale to zero after this long without requests, e.g. "15m"; "none"', (str,),
            'a duration such as "15m" or "none"', api_description='e.g. "15m"; "none": never scale to zero'),
)
BATCHING_KNOBS = (
    Setting("max_batch_size", int, "rows in one model call (turns batching on)", (int,), "an integer",
            minimum=1, maximum=100_000, api_description="rows in one model call"),
    Setting("max_latency_ms", float, "the longest a request waits for its batch's answer (turns batching on)",
            (int, float), "a number of milliseconds", minimum=1, maximum=600_000,
            api_description="the longest a request may wait for its batch's answer; "
                            "past it the request is answered 503"),
)
# Ray Serve's autoscaler (a Ray version only): the field of a deploy or a scale is one mapping,
# {"min", "max", "target_ongoing_requests", "downscale_delay"}; a flag is one key of it.
AUTOSCALING_KNOBS = (
    Setting("min", int, "the fewest replicas Ray keeps (0: scale to zero; turns autoscaling on)", (int,),
            "an integer", minimum=0, maximum=64, api_description="the fewest replicas (0: none when idle)"),
    Setting("max", int, "the most replicas Ray starts (turns autoscaling on)", (int,), "an integer",
            minimum=1, maximum=64, api_description="the most replicas"),
    Setting("target_ongoing_requests", float, "requests in flight per replica Ray aims for (turns autoscaling on)",
            (int, float), "a number", minimum=0, maximum=10_000,
            api_description="requests in flight per replica the autoscaler aims for"),
    Setting("downscale_delay", str, 'how long load must stay low before a replica goes, e.g. "30s"', (str, int, float),
            'a duration such as "30s"', api_description='e.g. "30s": how long load stays low before a replica '
                                                         "is removed"),
)
AUTOSCALING_FLAGS = {"min": "--min-replicas", "max": "--max-replicas"}  # "--min" alone would say nothing
# where a version can run: bentoml serve here, a shared model server here, or the agent's Ray cluster
ENGINES = ("local", "shared", "ray")
ENGINE_ALIASES = {"dedicated": "local"}  # what the local engine is, beside a shared server


def engine_named(engine: str) -> str:
    """An engine's name as the agent takes it (``"dedicated"`` is the local engine); a 400 otherwise."""
    engine = ENGINE_ALIASES.get(engine, engine)
    if engine not in ENGINES:
        raise InvalidArgument(f"engine must be one of {', '.join((*ENGINES, *ENGINE_ALIASES))}, got {engine!r}")
    return engine
# The serving fields of a deploy's ``serving`` and of a scale's body: the knobs, batching and
# autoscaling folded into one each; a deploy may also name the engine its version runs on.
SERVING_SETTINGS = (*(knob.name for knob in SERVING_KNOBS), "batching", "autoscaling")
DEPLOY_SETTINGS = (*SERVING_SETTINGS, "engine")


def knob_row(name: str) -> Setting:
    """The row of a serving, batching or autoscaling knob, by name."""
    return next(row for row in (*SERVING_KNOBS, *BATCHING_KNOBS, *AUTOSCALING_KNOBS) if row.name == name)


def autoscaling_flag(knob: Setting) -> str:
    return AUTOSCALING_FLAGS.get(knob.name, knob.flag)


def replicas_as_workers(workers: int | None, replicas: int | None) -> int | None:
    """``replicas`` is how Ray says ``workers``: one count, either name, not two different ones."""
    if replicas is not None and workers is not None and replicas != workers:
        raise InvalidArgument(f"replicas={replicas} and workers={workers} name the same count",
                              hint="give one: replicas on Ray, workers on the local engine")
    return workers if workers is not None else replicas

_BATCHING_HELP = "BentoML's adaptive batching on (--batching) or off (--no-batching)"


def batching_setting(batching: bool | None, max_batch_size: int | None,
                     max_latency_ms: float | None) -> bool | dict[str, Any] | None:
    """What to send for the batching arguments: None (leave it), False (off), or the knobs
    (either knob alone turns batching on; the agent fills the other)."""
    knobs = {k: v for k, v in {"max_batch_size": max_batch_size, "max_latency_ms": max_latency_ms}.items()
             if v is not None}
    if batching is False:
        if knobs:
            raise InvalidArgument("max_batch_size and max_latency_ms need batching on",
                                  hint="leave out batching=False, or the knobs")
        return False
    if batching is None and not knobs:
        return None
    return knobs


def serving_body(*, workers: int | None = None, memory: str | int | None = None,
                 cpus: float | str | None = None, idle_timeout: str | None = None,
                 batching: bool | None = None, max_batch_size: int | None = None,
                 max_latency_ms: float | None = None, replicas: int | None = None,
                 autoscaling: bool | dict[str, Any] | None = None) -> dict[str, Any]:
    """The serving arguments as the agent's JSON takes them (``serving`` of a deploy, the body of
    ``.../scale``): only those given, batching folded into one field, ``replicas`` as ``workers``."""
    if autoscaling is not None and not isinstance(autoscaling, (bool, dict)):
        raise InvalidArgument(f"autoscaling must be a mapping or False, not {autoscaling!r}",
                              hint='e.g. autoscaling={"min": 0, "max": 4, "target_ongoing_requests": 2}')
    body = {"workers": replicas_as_workers(workers, replicas), "memory": memory, "cpus": cpus,
            "idle_timeout": idle_timeout, "batching": batching_setting(batching, max_batch_size, max_latency_ms),
            "autoscaling": autoscaling}
    return {k: v for k, v in body.items() if v is not None}


def add_serving_flags(parser: argparse.ArgumentParser) -> None:
    """``--workers`` (or ``--replicas``), ``--memory``, ..., ``--[no-]batching``, ``--max-batch-size``,
    ``--max-latency-ms``, ``--[no-]autoscaling``, ``--min-replicas``, ``--max-replicas``, ..."""
    for knob in SERVING_KNOBS:
        parser.add_argument(knob.flag, type=knob.flag_type, help=knob.flag_help)
    parser.add_argument("--replicas", type=int, help="Ray replicas of the version (Ray's name for --workers)")
    parser.add_argument("--batching", action=argparse.BooleanOptionalAction, default=None, help=_BATCHING_HELP)
    for knob in BATCHING_KNOBS:
        parser.add_argument(knob.flag, type=knob.flag_type, help=knob.flag_help)
    parser.add_argument("--autoscaling", action=argparse.BooleanOptionalAction, default=None,
                        help="Ray Serve's autoscaler for a Ray version (--no-autoscaling: a fixed count)")
    for knob in AUTOSCALING_KNOBS:
        parser.add_argument(autoscaling_flag(knob), dest=f"autoscaling_{knob.name}", type=knob.flag_type,
                            help=knob.flag_help)


def serving_arguments(args: argparse.Namespace) -> dict[str, Any]:
    """The serving flags parsed by ``add_serving_flags`` as keyword arguments of ``deploy``/``scale``."""
    names = [knob.name for knob in SERVING_KNOBS] + ["batching", "replicas"] + [knob.name for knob in BATCHING_KNOBS]
    found = {name: getattr(args, name) for name in names}
    knobs = {knob.name: getattr(args, f"autoscaling_{knob.name}") for knob in AUTOSCALING_KNOBS}
    knobs = {name: value for name, value in knobs.items() if value is not None}
    if args.autoscaling is False:
        if knobs:
            raise InvalidArgument("--no-autoscaling and the autoscaling flags contradict each other")
        found["autoscaling"] = False
    elif knobs or args.autoscaling:
        found["autoscaling"] = knobs
    return found


def _check_knobs_json(field: str, given: dict[str, Any], knobs: tuple[Setting, ...], joiner: str) -> None:
    """A mapping of knobs in the panel's JSON: only those knobs, each of its JSON types (or null)."""
    names = [knob.name for knob in knobs]
    if set(given) - set(names):
        raise InvalidArgument(f"`{field}` takes {joiner.join(names)}, not {given!r}")
    for knob in knobs:
        value = given.get(knob.name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, knob.json_types)):
            raise InvalidArgument(f"`{field}.{knob.name}` must be {knob.json_text}, not {value!r}")


def check_serving_json(body: dict[str, Any]) -> dict[str, Any]:
    """A JSON body of serving changes (the panel's scale form: ``batching`` true, false or the knobs)
    as keyword arguments of ``Deployment.scale``; a field of the wrong JSON type is named."""
    fields = {knob.name: knob for knob in SERVING_KNOBS}
    unknown = sorted(set(body) - set(SERVING_SETTINGS))
    if unknown:
        raise InvalidArgument(f"unknown setting(s): {', '.join(unknown)}", hint=f"give {', '.join(SERVING_SETTINGS)}")
    changes: dict[str, Any] = {}
    for name, knob in fields.items():
        value = body.get(name)
        if value is None:  # not given: unchanged
            continue
        if isinstance(value, bool) or not isinstance(value, knob.json_types):
            raise InvalidArgument(f"`{name}` must be {knob.json_text}, not {value!r}")
        changes[name] = value
    batching = body.get("batching")
    if isinstance(batching, dict):  # the knobs given turn batching on; none given: on as it is
        _check_knobs_json("batching", batching, BATCHING_KNOBS, " and ")
        changes.update({knob.name: batching.get(knob.name) for knob in BATCHING_KNOBS})
        if not batching:
            changes["batching"] = True
    elif batching is not None:
        if not isinstance(batching, bool):
            raise InvalidArgument(f"`batching` must be true, false or {{max_batch_size, max_latency_ms}}, "
                                  f"not {batching!r}")
        changes["batching"] = batching
    autoscaling = body.get("autoscaling")
    if isinstance(autoscaling, dict):
        _check_knobs_json("autoscaling", autoscaling, AUTOSCALING_KNOBS, ", ")
        changes["autoscaling"] = {k: v for k, v in autoscaling.items() if v is not None}
    elif autoscaling is not None:
        if not isinstance(autoscaling, bool):
            raise InvalidArgument(f"`autoscaling` must be true, false or {{{', '.join(AUTOSCALING_FLAGS)}, ...}}, "
                                  f"not {autoscaling!r}")
        changes["autoscaling"] = autoscaling
    return changes


@dataclass
class ReleasePlan:
    """How a new version meets traffic; stored in the version's metadata as ``release``."""

    canary: float | None = None  # percent of new requests, sticky per client key when a header is named
    shadow: bool = False  # mirror live traffic to it; never answer from it
    auto_promote: bool = False  # promote once the gates pass for their whole window
    skip_parity: bool = False
    sticky_header: str | None = None

    def __post_init__(self) -> None:
        if self.canary is not None:
            if isinstance(self.canary, bool) or not 0 < float(self.canary) <= 100:
                raise InvalidArgument(f"canary must be a percentage in (0, 100], got {self.canary!r}",
                                      hint="e.g. canary=10 sends 10% of requests to the new version")
            self.canary = float(self.canary)
        if self.canary is not None and self.shadow:
            raise InvalidArgument("choose canary or shadow, not both",
                                  hint="shadow first (no user sees it), then a canary")

    @property
    def gradual(self) -> bool:
        return self.canary is not None or self.shadow

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def workers_option(service: str, workers: int) -> str:
    """BentoML's config override for a service's workers; the name is quoted, since BentoML
    cannot parse a '-' (or '.') in a bare key and deployment names may have one."""
    return f'services."{service}".workers={int(workers)}'
