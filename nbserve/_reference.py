"""The Python API reference (docs/reference.md), generated from the docstrings.

``python -m nbserve._reference > docs/reference.md``; a test keeps the committed file equal to
what this prints, so the reference cannot drift from the code.
"""

from __future__ import annotations

import inspect
from typing import Any

_MAGIC_HEADER = "## `%deploy` (IPython magic)"


def _annotation(value: Any) -> str:
    return value if isinstance(value, str) else inspect.formatannotation(value)


def _signature(obj: Any, name: str) -> str:
    """``name(a: int = 1, *, b: str = 'x') -> T``, annotations as written in the source."""
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return f"{name}(...)"
    parts, star_done = [], False
    for param in sig.parameters.values():
        if param.name == "self":
            continue
        if param.kind is param.KEYWORD_ONLY and not star_done:
            parts.append("*")
            star_done = True
        if param.kind is param.VAR_POSITIONAL:
            star_done = True
        text = {param.VAR_POSITIONAL: "*", param.VAR_KEYWORD: "**"}.get(param.kind, "") + param.name
        if param.annotation is not param.empty:
            text += f": {_annotation(param.annotation)}"
        if param.default is not param.empty:
            text += f" = {param.default!r}"
        parts.append(text)
    result = f" -> {_annotation(sig.return_annotation)}" if sig.return_annotation is not sig.empty else ""
    return f"{name}({', '.join(parts)}){result}".replace("\"", "").replace("'Deployment'", "Deployment")


def _doc(obj: Any) -> str:
    return inspect.cleandoc(inspect.getdoc(obj) or "(undocumented)")


def _entry(title: str, obj: Any, level: str = "###") -> list[str]:
    return [f"{level} `{_signature(obj, title)}`", "", _doc(obj), ""]


def render() -> str:
    import nbserve
    from nbserve import _api, _magic, admin, flavors
    from nbserve._card import ModelCard

    out = ["# Python API reference", "",
           "Generated from the docstrings by `python -m nbserve._reference > docs/reference.md` (a test keeps it",
           "current). The guides are [api.md](api.md) and the topic pages.", "",
           "## `nbserve`", ""]
    for name in ("deploy", "get", "deployments", "top", "connect"):
        out += _entry(f"nbserve.{name}", getattr(_api, name))
    out += _entry("nbserve.export_k8s", nbserve.export_k8s)
    out += _entry("nbserve.export_ray", nbserve.export_ray)
    out += ["## `nbserve.Deployment`", "", _doc(_api.Deployment), ""]
    for name, member in inspect.getmembers(_api.Deployment):
        if name.startswith("_") and name != "_repr_html_":
            continue
        if isinstance(inspect.getattr_static(_api.Deployment, name), property):
            out += [f"### `Deployment.{name}` (property)", "", _doc(member.fget if hasattr(member, "fget") else
                                                                      inspect.getattr_static(_api.Deployment, name).fget), ""]
        elif callable(member):
            out += _entry(f"Deployment.{name}", member)
    for name in ("schedule", "schedules", "get_schedule"):
        out += _entry(f"nbserve.{name}", getattr(nbserve, name))
    out += ["## `nbserve.admin`", "", _doc(admin), ""]
    for name in admin.__all__:
        obj = getattr(admin, name)
        if inspect.isfunction(obj):
            out += _entry(f"admin.{name}", obj)
    out += ["## `nbserve.flavors`", "", _doc(flavors), "", "### `Flavor`", "", _doc(flavors.Flavor), ""]
    for name in ("register_flavor", "flavor_for"):
        out += _entry(f"flavors.{name}", getattr(flavors, name))
    out += ["## `ModelCard`", "", _doc(ModelCard), ""]
    for name in ("to_markdown", "to_html", "save"):
        out += _entry(f"ModelCard.{name}", getattr(ModelCard, name))
    out += [_MAGIC_HEADER, "", "```", _magic.USAGE, "```", ""]
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":  # pragma: no cover
    print(render(), end="")
