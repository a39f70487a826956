"""Model cards: what a version is, where it came from, and how it has done so far.

One structure (sections of paragraphs, key/value lists and tables) renders to HTML for the
notebook and to Markdown or HTML files. Figures that cannot be had yet (no labels, too
little traffic) say so instead of failing the card.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._kinds import INPUT_COLUMN

from .errors import InvalidArgument, NbserveError

if TYPE_CHECKING:
    from ._api import Deployment

Block = tuple[Any, ...]  # ("p", text) | ("kv", [(key, value)]) | ("table", columns, rows)


@dataclass
class ModelCard:
    """A model card of one version: sections of text, key/value lists and tables."""

    title: str
    sections: list[tuple[str, list[Block]]] = field(default_factory=list)

    def to_markdown(self) -> str:
        """The card as Markdown (what ``save("card.md")`` writes)."""
        out = [f"# {self.title}", ""]
        for heading, blocks in self.sections:
            out += [f"## {heading}", ""]
            for block in blocks:
                if block[0] == "p":
                    out += [block[1], ""]
                elif block[0] == "kv":
                    out += [f"- **{k}**: {_md(v)}" for k, v in block[1]] + [""]
                else:
                    columns, rows = block[1], block[2]
                    out.append("| " + " | ".join(columns) + " |")
                    out.append("|" + "---|" * len(columns))
                    out += ["| " + " | ".join(_md(c) for c in row) + " |" for row in rows]
                    out.append("")
        return "\n".join(out)

    def to_html(self) -> str:
        """The card as an HTML fragment (what the notebook shows)."""
        parts = [f'<div class="nbserve-card"><h2>{html.escape(self.title)}</h2>']
        for heading, blocks in self.sections:
            parts.append(f"<h3>{html.escape(heading)}</h3>")
            for block in blocks:
                if block[0] == "p":
                    parts.append(f"<p>{html.escape(block[1])}</p>")
                elif block[0] == "kv":
                    items = "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(_text(v))}</li>" for k, v in block[1])
                    parts.append(f"<ul>{items}</ul>")
                else:
                    head = "".join(f"<th>{html.escape(c)}</th>" for c in block[1])
                    body = "".join("<tr>" + "".join(f"<td>{html.escape(_text(c))}</td>" for c in row) + "</tr>"
                                   for row in block[2])
                    parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        parts.append("</div>")
        return "".join(parts)

    def _repr_html_(self) -> str:
        return self.to_html()

    def __str__(self) -> str:
        return self.to_markdown()

    def __repr__(self) -> str:
        return f"<ModelCard {self.title!r}: {', '.join(h for h, _ in self.sections)}>"

    def save(self, path: str | Path) -> Path:
        """Write the card: ``.md`` as Markdown, ``.html`` as a standalone page."""
        target = Path(path)
        if target.suffix == ".md":
            target.write_text(self.to_markdown())
        elif target.suffix in (".html", ".htm"):
            target.write_text(f"<!doctype html><meta charset='utf-8'><title>{html.escape(self.title)}</title>"
                              f"<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}"
                              f"table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:2px 6px}}"
                              f"</style>{self.to_html()}")
        else:
            raise InvalidArgument(f"cannot tell the format of {target.name}", hint="end the name in .md or .html")
        return target


def _text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _md(value: Any) -> str:
    return _text(value).replace("|", "\\|").replace("\n", " ")


def build_card(dep: "Deployment", version: int | None) -> ModelCard:
    if version is None:
        raise InvalidArgument(f"{dep.name} has no live version", hint="pass version=N")
    meta = dep.metadata(version)
    model = meta.get("model") or {}
    prov = meta.get("provenance") or {}
    card_text = meta.get("card") or {}
    live = "live" if version == dep.version else next(
        (v["status"] for v in dep.versions if v["number"] == version), "unknown")
    card = ModelCard(f"{dep.name} v{version}: {model.get('class', 'model')}")

    runtime = model.get("runtime") or {}
    runs = "onnx (compiled, parity-checked)" if runtime.get("name") == "onnx" else "native"
    if runtime.get("fallback"):
        runs += f" ({runtime['fallback']})"
    about: list[Block] = [("kv", [("status", live), ("task", model.get("task")), ("flavor", model.get("flavor")),
                                  ("runtime", runs),
                                  ("Bento", meta.get("bento")), ("stable URL", dep.url),
                                  ("this version's URL", f"{dep.url}/v/{version}")])]
    if meta.get("description"):
        about.insert(0, ("p", meta["description"]))
    card.sections.append(("Model", about))
    card.sections.append(("Intended use", [("p", card_text.get("intended_use") or
                                            "Not stated (deploy with intended_use=... to fill this in).")]))
    card.sections.append(("Limitations", [("p", card_text.get("limitations") or
                                           "Not stated (deploy with limitations=... to fill this in).")]))
    params = model.get("params") or {}
    if params:
        card.sections.append(("Parameters", [("table", ["parameter", "value"],
                                              [[k, v] for k, v in sorted(params.items())][:60])]))

    schema = dep.versions and next((v for v in dep.versions if v["number"] == version), {}).get(
        "metadata", {}).get("schema", {})
    columns = (schema or {}).get("columns", [])
    reference_blocks: list[Block] = []
    example: str | None = None
    try:
        reference = dep.reference(version)
        if INPUT_COLUMN in reference.columns and len(reference):
            example = '{"data": [' + str(reference[INPUT_COLUMN].iloc[0])[:400] + "]}"
        if columns:
            reference_blocks.append(("p", f"{len(reference)} rows x {len(columns)} columns, kept at deploy time "
                                          "as the drift reference."))
        else:
            reference_blocks.append(("p", f"{len(reference)} inputs, kept at deploy time as the parity and drift "
                                          "reference (drift compares the columns derived from them)."))
        numeric = reference[[c["name"] for c in columns if c.get("kind") == "numeric"]]
        if not numeric.empty:
            stats = numeric.describe().T
            reference_blocks.append(("table", ["column", "mean", "std", "min", "50%", "max"],
                                     [[name, *(row[k] for k in ("mean", "std", "min", "50%", "max"))]
                                      for name, row in stats.iterrows()]))
    except NbserveError as exc:
        reference_blocks.append(("p", f"Reference sample unavailable: {exc.message}"))
    card.sections.append(("Training provenance", [("kv", [
        ("notebook", prov.get("notebook")), ("cell", prov.get("cell_execution_count")),
        ("cell SHA-256", (prov.get("cell_sha256") or "")[:16] or None), ("trained by", prov.get("user")),
        ("host", prov.get("host")), ("built at", prov.get("created_at")), ("deployed by", meta.get("created_by")),
        ("deployed at", meta.get("created_at")), ("Python", prov.get("python")),
        ("git", (prov.get("git") or {}).get("commit") if isinstance(prov.get("git"), dict) else prov.get("git")),
        ("scheduled run", (prov.get("scheduled_run") or {}).get("run_id") if prov.get("scheduled_run") else None),
    ])]))
    card.sections.append(("Input schema", _schema_blocks(schema or {}, columns, example)))
    card.sections.append(("Reference sample", reference_blocks))
    card.sections.append(("Quality so far", _quality_blocks(dep, version)))
    card.sections.append(("Latency and drift so far", _serving_blocks(dep, version)))
    packages = meta.get("packages") or []
    if packages:
        card.sections.append(("Packages", [("p", ", ".join(packages))]))
    return card


def _schema_blocks(schema: dict[str, Any], columns: list[dict[str, Any]], example: str | None) -> list[Block]:
    """A frame's columns, or another kind of input with what its requests look like."""
    import json

    kind = schema.get("kind", "frame")
    if kind == "frame":
        return [("table", ["column", "dtype", "kind"], [[c["name"], c.get("dtype"), c.get("kind")] for c in columns])]
    spec = {k: v for k, v in schema.items() if k not in ("kind", "vocabulary")}
    return [("kv", [("kind of input", kind), ("spec", json.dumps(spec, sort_keys=True)[:600]),
                    ("example request", example)])]


def _quality_blocks(dep: "Deployment", version: int) -> list[Block]:
    try:
        quality = dep.quality("90d", bucket="90d", version=version)
    except NbserveError as exc:
        return [("p", f"Unavailable: {exc.message}")]
    if quality.empty:
        return [("p", "No real outcomes yet: send them with dep.feedback(ids, y_true).")]
    totals = quality.iloc[-1]
    metrics = [c for c in quality.columns if c not in ("time", "version", "labelled")]
    return [("p", f"{quality.attrs.get('task') or 'model'} metrics over {int(quality['labelled'].sum())} "
                  "labelled predictions (scikit-learn):"),
            ("table", ["metric", "value"], [[m, totals[m]] for m in metrics])]


def _serving_blocks(dep: "Deployment", version: int) -> list[Block]:
    blocks: list[Block] = []
    try:
        latency = dep.latency("30d", version=version)
        served = latency[latency["requests"] > 0] if not latency.empty else latency
        if served.empty:
            blocks.append(("p", "No requests served yet."))
        else:
            requests = int(served["requests"].sum())
            weighted = (served["p50_ms"] * served["requests"]).sum() / requests
            blocks.append(("kv", [("requests", requests), ("p50 ms (request-weighted)", float(weighted)),
                                  ("worst minute's p99 ms", float(served["p99_ms"].max())),
                                  ("5xx", int(served["errors"].sum()))]))
    except NbserveError as exc:
        blocks.append(("p", f"Latency unavailable: {exc.message}"))
    try:
        drift = dep.drift(window="7d", version=version)
        blocks.append(("kv", [("dataset drift (7 days)", bool(drift.attrs.get("dataset_drift"))),
                              ("drifted features", f"{drift.attrs.get('drifted_features')} of "
                                                   f"{drift.attrs.get('features')}")]))
    except NbserveError as exc:
        blocks.append(("p", f"Drift: {exc.message}"))
    return blocks
