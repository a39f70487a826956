"""What a notebook's model needs on a server: the installed distributions to pin (``dist==version``,
found from the modules its pickle names) and the notebook code to save by value with it (classes
and functions of ``__main__`` or of ``.py`` files beside the notebook, which a server has not)."""

from __future__ import annotations

import importlib.metadata as _metadata
import pickletools
import re
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .errors import InvalidArgument

_ALWAYS = ("numpy", "pandas")
_NEVER = {"bentoml", "nbserve", "__main__", "builtins", "copyreg", "_codecs"}


def _modules_in_pickle(data: bytes) -> set[str]:
    """Every module a pickle names: its globals, and cloudpickle's ``subimport`` calls."""
    memo: dict[int, Any] = {}
    pushed: list[Any] = [None, None]
    modules: set[str] = set()
    subimport_next = False
    for opcode, arg, _pos in pickletools.genops(data):
        name = opcode.name
        if name == "GLOBAL":
            module, _, attr = str(arg).partition(" ")
            modules.add(module)
            pushed.append(None)
        elif name == "STACK_GLOBAL":
            module, attr = pushed[-2], pushed[-1]
            if isinstance(module, str):
                modules.add(module)
                subimport_next = attr in ("subimport", "dynamic_subimport")
            pushed.append(None)
        elif name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8"):
            if subimport_next:
                modules.add(str(arg))
                subimport_next = False
            pushed.append(arg)
        elif name == "MEMOIZE":
            memo[len(memo)] = pushed[-1]
        elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[int(arg)] = pushed[-1]
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            value = memo.get(int(arg))
            if subimport_next and isinstance(value, str):  # a module name seen before in the pickle
                modules.add(value)
                subimport_next = False
            pushed.append(value)
        elif opcode.stack_after:
            pushed.append(None)
        del pushed[:-2]
    return modules


def _referenced_modules(model: Any) -> set[str]:
    """Modules a plain pickle (what framework savers use) names the model's classes by."""
    import pickle

    try:
        return _modules_in_pickle(pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL))
    except Exception:  # noqa: BLE001 - lambdas, local functions: only cloudpickle takes those
        return {"__main__"}


def notebook_code(model: Any) -> list[str]:
    """The modules of code that lives with the notebook, not in an installed package: classes
    and functions defined in ``__main__`` (the notebook itself) or in ``.py`` files beside it.
    A server has neither, so such code is saved by value with the model (and what that code
    refers to in turn, e.g. a notebook class whose base class is in a file beside it)."""
    return code_and_pickle(model)[0]


def code_and_pickle(model: Any) -> tuple[list[str], bytes]:
    """:func:`notebook_code`, and the model's cloudpickle with that code by value (whose
    names are the packages to pin: handed on, so a large model is not pickled once more)."""
    import cloudpickle

    installed = _metadata.packages_distributions()
    found = {m for m in map(lambda n: _local_module(n, installed), _referenced_modules(model)) if m}
    while True:
        with ByValue(sorted(found)):
            data = cloudpickle.dumps(model)
        more = {m for m in map(lambda n: _local_module(n, installed), _modules_in_pickle(data)) if m} - found
        if not more:
            return sorted(found), data
        found |= more


def _local_module(name: str, installed: Any) -> str | None:
    """The top-level module ``name`` belongs to, if it is notebook code (not stdlib, not an
    installed distribution, not in site-packages); else None."""
    if name == "__main__":
        return name
    top = name.split(".")[0]
    if top in sys.stdlib_module_names or top in installed or top in _NEVER:
        return None
    path = getattr(sys.modules.get(top), "__file__", None)
    if not path or any(part in ("site-packages", "dist-packages") for part in Path(path).parts):
        return None
    return top


class ByValue:
    """While active, cloudpickle pickles these modules' code into the pickle itself."""

    def __init__(self, modules: list[str]) -> None:
        self.modules = [sys.modules[m] for m in modules if m != "__main__" and m in sys.modules]

    def __enter__(self) -> "ByValue":
        import cloudpickle

        for module in self.modules:
            cloudpickle.register_pickle_by_value(module)
        return self

    def __exit__(self, *exc: Any) -> None:
        import cloudpickle

        for module in self.modules:
            try:
                cloudpickle.unregister_pickle_by_value(module)
            except ValueError:
                pass


def pinned_requirements(model: Any, extra_modules: Iterable[str] = (), *, pickled: bytes | None = None) -> list[str]:
    """``dist==version`` for each installed distribution the model needs, nothing more: the
    top-level modules its cloudpickle names (``pickled``, when the caller has it already).
    cloudpickle pickles notebook-defined classes by value; the modules their code imports
    show up as ``subimport('name')`` calls, which are caught too."""
    if pickled is None:
        import cloudpickle

        pickled = cloudpickle.dumps(model)
    named = {m.split(".")[0] for m in _modules_in_pickle(pickled) if m}
    modules = named | set(_ALWAYS) | set(extra_modules)
    stdlib = set(sys.stdlib_module_names)
    by_module = _metadata.packages_distributions()
    pins: dict[str, str] = {}
    for module in sorted(modules - stdlib - _NEVER):
        for dist in by_module.get(module, []):
            if dist.lower() in _NEVER:
                continue
            try:
                pins[dist.lower()] = f"{dist}=={_metadata.version(dist)}"
            except _metadata.PackageNotFoundError:
                continue
    return sorted(pins.values(), key=str.lower)


def resolved_set(pins: Iterable[str]) -> list[str]:
    """The pins and everything they need, at the versions installed here: each pinned
    distribution's requirements (markers evaluated for this interpreter, extras followed),
    transitively. A serving environment or an image installs this set, so it holds what the
    kernel ran rather than a fresh resolution of the top-level pins. A pin this environment
    does not have at that version (one the user asked for) is kept and not followed: its
    requirements are left to the installer."""
    from packaging.requirements import InvalidRequirement, Requirement

    chosen: dict[str, str] = {}
    todo: list[tuple[str, frozenset[str]]] = []
    for pin in pins:
        parsed = parse_pin(pin)
        if parsed is None:
            continue
        name = canonical_name(parsed[0])
        chosen[name] = f"{parsed[0]}=={parsed[1]}"
        if _installed_version(name) == parsed[1]:
            todo.append((name, frozenset()))
    followed: dict[str, set[str]] = {}
    while todo:
        name, extras = todo.pop()
        done = followed.setdefault(name, set())
        wanted = ({""} | set(extras)) - done
        if not wanted:
            continue
        done |= wanted
        for text in _metadata.distribution(name).requires or []:
            try:
                req = Requirement(text)
            except InvalidRequirement:
                continue
            if req.marker is not None and not any(req.marker.evaluate({"extra": e}) for e in wanted):
                continue
            dep = canonical_name(req.name)
            version = _installed_version(dep)
            if dep in _NEVER or version is None:
                continue
            if dep not in chosen:
                chosen[dep] = f"{_metadata.distribution(dep).metadata['Name']}=={version}"
            if chosen[dep].endswith(f"=={version}"):
                todo.append((dep, frozenset(req.extras)))
    return sorted(chosen.values(), key=str.lower)


def _installed_version(name: str) -> str | None:
    try:
        return _metadata.version(name)
    except _metadata.PackageNotFoundError:
        return None


_PIN = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([A-Za-z0-9][A-Za-z0-9.+!_-]*)\s*$")


def parse_pin(text: str) -> tuple[str, str] | None:
    """``("scikit-learn", "1.5.2")`` of an exact pin ``scikit-learn==1.5.2``; None for anything else."""
    match = _PIN.match(str(text))
    return (match.group(1), match.group(2)) if match else None


def canonical_name(name: str) -> str:
    """A distribution's name as the index compares it (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def with_packages(found: list[str], packages: Iterable[str] | None) -> list[str]:
    """The pins found, with ``packages`` (exact ``dist==version`` pins the user gives) added, or
    replacing the found pin of the same distribution: for an import the pickle cannot show (one
    made inside a function only when it runs) or a version the server should have instead."""
    if not packages:
        return found
    if isinstance(packages, str):
        packages = [packages]
    given: dict[str, str] = {}
    for pin in packages:
        parsed = parse_pin(pin)
        if parsed is None:
            raise InvalidArgument(f"packages takes exact pins such as 'scikit-learn==1.5.2', got {pin!r}",
                                  hint="a version serves with exactly what it was built for, so each needs its ==")
        given[canonical_name(parsed[0])] = f"{parsed[0]}=={parsed[1]}"
    kept = {canonical_name(pin.partition("==")[0]): pin for pin in found}
    return sorted({**kept, **given}.values(), key=str.lower)

