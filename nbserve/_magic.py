"""``%deploy``: the notebook front, a thin mapping of flags onto the Python API.

Bad arguments raise IPython's ``UsageError`` with the usage text; nbserve errors are
shown as their message and hint (no traceback), with the previous version still serving.
"""

from __future__ import annotations

import argparse
import shlex
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class

from ._runtimes import DEFAULT_RUNTIME, RUNTIMES
from ._settings import ENGINE_ALIASES, ENGINES, add_serving_flags, serving_arguments
from .errors import NbserveError

USAGE = """\
%deploy MODEL --name NAME --sample SAMPLE [--description TEXT] [--port N] [--target T]
        [--canary PERCENT [--sticky-header H] | --shadow] [--auto-promote] [--skip-parity]
        [--intended-use TEXT] [--limitations TEXT] [--method M | --methods M1,M2]
        [--packages DIST==VERSION,...] [--runtime auto|onnx|native]
        [--workers N] [--memory 1G] [--cpus 1] [--idle-timeout 15m]
        [--batching [--max-batch-size 64] [--max-latency-ms 20] | --no-batching]
        [--engine local|dedicated|shared|ray | --shared] [--replicas N] [--min-replicas 0] [--max-replicas 8]
        [--target-ongoing-requests 4] [--downscale-delay 30s]
%deploy --promote NAME | --abort NAME | --canary PERCENT --set-canary NAME
%deploy --list
%deploy --history NAME
%deploy --rollback NAME [--to N]
%deploy --stop NAME | --start NAME
%deploy --logs NAME [--version N]
%deploy --watch NAME [--window 15m]
%deploy --alias ALIAS NAME VERSION
%deploy --quality NAME [--window 1d] | --card NAME [--version N]
%deploy --help

MODEL and SAMPLE are names (or expressions) in the notebook's namespace; MODEL may be a
function. --method serves that method at /predict (and at its own path), e.g. transform.
Deploying an existing NAME again makes its next version."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # never sys.exit() inside a kernel
        raise UsageError(f"{message}\n\n{USAGE}")

    def print_help(self, file: Any = None) -> None:
        raise _HelpRequested


class _HelpRequested(Exception):
    pass


def _comma_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="%deploy", usage=USAGE, add_help=True)
    p.add_argument("model", nargs="?", help="the model variable")
    p.add_argument("--name", "-n")
    p.add_argument("--sample", "-s")
    p.add_argument("--description", "-d")
    p.add_argument("--port", type=int)
    p.add_argument("--target")
    p.add_argument("--to", type=int)
    p.add_argument("--version", type=int)
    p.add_argument("--canary", type=float)
    p.add_argument("--shadow", action="store_true")
    p.add_argument("--auto-promote", action="store_true")
    p.add_argument("--skip-parity", action="store_true")
    p.add_argument("--sticky-header")
    add_serving_flags(p)
    p.add_argument("--engine", choices=(*ENGINES, *ENGINE_ALIASES))
    p.add_argument("--shared", action="store_const", const="shared", dest="engine",
                   help="run in a shared model server (--engine shared)")
    p.add_argument("--intended-use")
    p.add_argument("--limitations")
    p.add_argument("--method")
    p.add_argument("--methods", type=_comma_list)
    p.add_argument("--packages", type=_comma_list)
    p.add_argument("--runtime", choices=RUNTIMES, default=DEFAULT_RUNTIME)
    actions = p.add_mutually_exclusive_group()
    actions.add_argument("--alias", nargs=3, metavar=("ALIAS", "NAME", "VERSION"))
    actions.add_argument("--quality", metavar="NAME")
    actions.add_argument("--card", metavar="NAME")
    actions.add_argument("--list", action="store_true")
    actions.add_argument("--history", metavar="NAME")
    actions.add_argument("--rollback", metavar="NAME")
    actions.add_argument("--stop", metavar="NAME")
    actions.add_argument("--start", metavar="NAME")
    actions.add_argument("--logs", metavar="NAME")
    actions.add_argument("--watch", metavar="NAME")
    actions.add_argument("--promote", metavar="NAME")
    actions.add_argument("--abort", metavar="NAME")
    actions.add_argument("--set-canary", metavar="NAME")
    p.add_argument("--window", default="15m")
    return p


@magics_class
class DeployMagics(Magics):
    @line_magic
    def deploy(self, line: str) -> Any:
        """Deploy a model from this notebook; see ``%deploy --help``."""
        try:
            args = build_parser().parse_args(shlex.split(line))
        except _HelpRequested:
            print(USAGE)
            return None
        except ValueError as exc:  # shlex: unbalanced quotes
            raise UsageError(f"{exc}\n\n{USAGE}") from None
        try:
            return self._run(args)
        except NbserveError as exc:
            raise UsageError(str(exc)) from None

    def _run(self, args: argparse.Namespace) -> Any:
        from . import _api

        target = args.target
        if args.list:
            return _deployments_frame(_api.deployments(target=target))
        if args.history:
            return _api.get(args.history, target=target).history()
        if args.rollback:
            return _api.get(args.rollback, target=target).rollback(to=args.to)
        if args.stop:
            return _api.get(args.stop, target=target).stop()
        if args.start:
            return _api.get(args.start, target=target).start()
        if args.promote:
            return _api.get(args.promote, target=target).promote()
        if args.abort:
            return _api.get(args.abort, target=target).abort()
        if args.set_canary:
            if args.canary is None:
                raise UsageError(f"--set-canary needs --canary PERCENT\n\n{USAGE}")
            return _api.get(args.set_canary, target=target).set_canary(args.canary)
        if args.alias:
            alias, name, version = args.alias
            if not version.isdigit():
                raise UsageError(f"--alias takes ALIAS NAME VERSION (a number), got {version!r}\n\n{USAGE}")
            return _api.get(name, target=target).alias(alias, int(version))
        if args.quality:
            window = args.window if args.window != "15m" else "1d"
            return _api.get(args.quality, target=target).quality(window)
        if args.card:
            return _api.get(args.card, target=target).model_card(args.version)
        if args.watch:
            return _api.get(args.watch, target=target).dashboard(window=args.window)
        if args.logs:
            print(_api.get(args.logs, target=target).logs(version=args.version))
            return None
        if not args.model:
            raise UsageError(f"name the model to deploy\n\n{USAGE}")
        if not args.name:
            raise UsageError(f"--name is required to deploy\n\n{USAGE}")
        if not args.sample:
            raise UsageError(
                f"--sample is required: a few input rows fix the schema and the drift reference\n\n{USAGE}"
            )
        model = self._lookup(args.model, "MODEL")
        sample = self._lookup(args.sample, "--sample")
        return _api.deploy(
            model, args.name, sample, description=args.description, port=args.port, target=target,
            canary=args.canary, shadow=args.shadow, auto_promote=args.auto_promote,
            skip_parity=args.skip_parity, sticky_header=args.sticky_header,
            intended_use=args.intended_use, limitations=args.limitations,
            method=args.method, methods=args.methods, packages=args.packages, runtime=args.runtime,
            engine=args.engine, **serving_arguments(args),
        )

    def _lookup(self, expression: str, what: str) -> Any:
        try:
            return self.shell.ev(expression)
        except Exception as exc:  # noqa: BLE001 - any failure to evaluate the user's expression
            raise UsageError(
                f"{what} {expression!r} is not defined in the notebook ({type(exc).__name__}: {exc})"
                f"\n\n{USAGE}"
            ) from None


def _deployments_frame(deps: list[Any]) -> Any:
    import pandas as pd

    rows = [
        {"name": d.name, "status": d.status, "version": d.version, "versions": len(d.versions), "url": d.url}
        for d in deps
    ]
    return pd.DataFrame(rows, columns=["name", "status", "version", "versions", "url"])


def register(ipython: Any) -> None:
    ipython.register_magics(DeployMagics)
