"""The model tab's text: what is served (``/info``, ``/ready``), how it was registered, and the
monitor's latest verdict (``/drift``), as Markdown. No Gradio here: the tab only places it."""

from collections.abc import Mapping
from typing import Any

from modelyard.webui.metrics_table import MISSING, cell, escape, metrics_markdown, number

NO_REGISTRY = "Not served from the registry: no promotion gates to show."
NO_MONITOR = (
    "No monitoring service was given: start the UI with `--monitor URL` "
    "(the URL of `modelyard monitor --serve`) to see the latest drift report here."
)


def identity_markdown(info: Mapping[str, Any], quantized: bool | None) -> str:
    """Name, version, sha256, quantized or not, integrity and provenance as one table."""
    integrity = info.get("integrity") or {}
    rows: list[tuple[str, str]] = [
        ("project", cell(info.get("project"))),
        ("model", cell(info.get("name"))),
        ("version", cell(info.get("version"))),
        ("created", cell(info.get("created_at"))),
        ("sha256", f"`{info.get('sha256', '?')}`"),
        ("quantized (int8)", "unknown" if quantized is None else cell(quantized)),
        ("integrity", _integrity(integrity)),
        ("git commit", cell(info.get("git_commit"))),
        ("data fingerprint", cell(info.get("data_fingerprint"))),
        ("modelyard", cell(info.get("modelyard_version"))),
    ]
    follow = info.get("follow")
    if isinstance(follow, Mapping):
        rows.append(("follows", _follow(follow)))
    lines = ["| fact | value |", "| --- | --- |"] + [
        f"| **{key}** | {value} |" for key, value in rows
    ]
    return "\n".join(lines)


def _integrity(integrity: Mapping[str, Any]) -> str:
    text = cell(integrity.get("state", "unknown"))
    if integrity.get("key_id"):
        text += f" (key {cell(integrity['key_id'])})"
    return text


def _follow(follow: Mapping[str, Any]) -> str:
    text = f"{cell(follow.get('reference'))}, {cell(follow.get('swaps', 0))} swap(s)"
    if follow.get("error"):
        text += f"; last problem: {cell(follow['error'])}"
    return text


def registry_markdown(info: Mapping[str, Any]) -> str:
    """``/info``'s ``registry`` block: the registered version served, through which alias, and
    the promotion gates it passed with their numbers; a sentence for a bundle served directly."""
    registry = info.get("registry")
    if not isinstance(registry, Mapping) or not registry:
        return NO_REGISTRY
    facts = [
        ("registered model", registry.get("name")),
        ("registry version", registry.get("version")),
        ("alias", registry.get("alias")),
        ("bundle version", registry.get("bundle_version")),
        ("promoted at", registry.get("promoted_at")),
        ("forced past a failed gate", registry.get("forced")),
    ]
    blocks = [
        "| fact | value |\n| --- | --- |\n"
        + "\n".join(f"| **{key}** | {cell(value)} |" for key, value in facts)
    ]
    gates = [gate for gate in registry.get("gates") or [] if isinstance(gate, Mapping)]
    if not gates:
        blocks.append("The alias was set without promotion gates.")
        return "\n\n".join(blocks)
    blocks.append(
        "| gate | passed | summary |\n| --- | --- | --- |\n"
        + "\n".join(
            "| " + " | ".join(cell(gate.get(key)) for key in ("name", "passed", "summary")) + " |"
            for gate in gates
        )
    )
    for gate in gates:
        values = gate.get("values")
        if isinstance(values, Mapping) and values:
            blocks.append(f"Numbers of the {cell(gate.get('name'))} gate:")
            blocks.append(metrics_markdown(values))
    return "\n\n".join(blocks)


def drift_markdown(verdict: Mapping[str, Any], report_url: str) -> str:
    """The verdict's headline: alert or not, drift share and columns, realised accuracy."""
    drift = verdict.get("drift") or {}
    window = verdict.get("window") or {}
    thresholds = verdict.get("thresholds") or {}
    alert = "**Alert**" if verdict.get("alert") else "**No alert**"
    reasons = [cell(reason) for reason in verdict.get("reasons") or []]
    lines = [f"{alert}" + (": " + "; ".join(reasons) if reasons else "") + "."]
    drifted = drift.get("drifted_columns") or []
    share = drift.get("share")
    columns = len(drift.get("columns") or {})
    share_text = MISSING if share is None else f"{share:.0%}"
    limit = thresholds.get("drift_share")
    lines.append(
        "| fact | value |\n| --- | --- |\n"
        f"| **dataset drift** | {cell(bool(drift.get('detected')))} |\n"
        f"| **drift share** | {share_text} of {columns} column(s)"
        + ("" if limit is None else f" (alert at {limit:.0%})")
        + " |\n"
        f"| **drifted columns** | {cell(drifted) if drifted else 'none'} |\n"
        f"| **predictions in window** | {cell(window.get('predictions'))} |\n"
        f"| **window** | {cell(window.get('first_at'))} to {cell(window.get('last_at'))} |\n"
        f"| **report generated** | {cell(verdict.get('generated_at'))} |"
    )
    lines.append(_realised(verdict.get("realised_accuracy") or {}))
    lines.append(f"[Open the full drift report]({report_url})")
    return "\n\n".join(lines)


def _realised(realised: Mapping[str, Any]) -> str:
    metrics = realised.get("metrics") or {}
    pairs = realised.get("pairs", 0)
    if not metrics:
        return f"Realised accuracy: no predictions with feedback yet ({cell(pairs)} pairs)."
    judged = "" if realised.get("judged") else " (too few to judge against the promoted values)"
    lines = [
        f"Realised accuracy over {cell(pairs)} predictions with feedback{judged}:",
        "",
        "| metric | realised | promoted | worse than promoted |",
        "| --- | --- | --- | --- |",
    ]
    for name, entry in metrics.items():
        realised_value = entry.get("realised")
        promoted = entry.get("promoted")
        lines.append(
            f"| {escape(str(name))} | {_num(realised_value)} | {_num(promoted)} "
            f"| {cell(bool(entry.get('below_promoted')))} |"
        )
    return "\n".join(lines)


def _num(value: Any) -> str:
    return number(float(value)) if isinstance(value, int | float) else MISSING
