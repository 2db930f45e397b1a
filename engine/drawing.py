"""Drawings of a workflow: every flow its steps allow, and what a run did.

LlamaIndex's ``draw_all_possible_flows`` / ``draw_most_recent_execution`` write a pyvis
page that loads its scripts from a CDN. These write a self-contained HTML page (an
inline SVG, no script, nothing fetched) or Mermaid text, chosen by the file's
extension. The graph of a run is read from the journal alone (step names and event
type names as journaled): it needs none of the workflow's code, so the web view draws
it for any run.
"""

from __future__ import annotations

import html
import re
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from journal import EntryKind, Journal, Run, Undecoded
from journal import payloads as P

from .errors import DrawingError
from .events import Event, HumanResponseEvent, InputRequiredEvent, StartEvent, StopEvent
from .recorded import lineage
from .runtime import Engine, default_engine
from .workflow import Workflow, WorkflowHandler

__all__ = [
    "DrawingError",
    "FlowEdge",
    "FlowGraph",
    "FlowNode",
    "draw_all_possible_flows",
    "draw_all_possible_flows_mermaid",
    "draw_most_recent_execution",
    "draw_most_recent_execution_mermaid",
    "run_graph",
    "workflow_graph",
]

K = EntryKind

COLORS = {
    "step": "#ADD8E6",
    "event": "#90EE90",
    "start": "#E27AFF",
    "stop": "#FFA07A",
    "external": "#BEDAE4",
    "failed": "#F08080",
}
"""Fill colour by node kind (LlamaIndex's palette)."""

MERMAID_EXTENSIONS = (".mmd", ".mermaid", ".md")


@dataclass(frozen=True)
class FlowNode:
    """A step (a box) or an event type (an ellipse); ``count`` is how many times a
    run's graph saw it (0 in the graph of all possible flows)."""

    id: str
    label: str
    kind: str
    count: int = 0


@dataclass(frozen=True)
class FlowEdge:
    """An event accepted by a step, or returned (emitted) by one."""

    source: str
    target: str
    count: int = 0


@dataclass
class FlowGraph:
    """Nodes and edges in the order found; render with ``to_mermaid``/``to_svg``/``to_html``."""

    title: str
    nodes: list[FlowNode] = field(default_factory=list)
    edges: list[FlowEdge] = field(default_factory=list)

    def node(self, node_id: str) -> FlowNode | None:
        """The node of that id, if any."""
        return next((n for n in self.nodes if n.id == node_id), None)

    def edge_labels(self) -> set[tuple[str, str]]:
        """Every edge as (source label, target label)."""
        labels = {n.id: n.label for n in self.nodes}
        return {(labels[e.source], labels[e.target]) for e in self.edges}

    def to_mermaid(self) -> str:
        """Mermaid ``flowchart TD`` text."""
        ids = {n.id: f"n{i}" for i, n in enumerate(self.nodes)}
        lines = ["flowchart TD"]
        for n in self.nodes:
            text = _mermaid_text(n.label)
            shape = f'["{text}"]' if n.kind in ("step", "failed") else f'(["{text}"])'
            lines.append(f"    {ids[n.id]}{shape}:::{n.kind}")
        for e in self.edges:
            arrow = f"-->|{e.count}|" if e.count > 1 else "-->"
            lines.append(f"    {ids[e.source]} {arrow} {ids[e.target]}")
        lines += [f"    classDef {k} fill:{c},color:#000000" for k, c in COLORS.items()]
        return "\n".join(lines) + "\n"

    def to_svg(self) -> str:
        """A layered drawing as an SVG element: no script, no style element (colours
        are presentation attributes, so a strict Content-Security-Policy allows it)."""
        return _svg(self)

    def to_html(self) -> str:
        """A self-contained page: the SVG, then the Mermaid text. Nothing is fetched."""
        title = html.escape(self.title)
        return (
            '<!doctype html>\n<html><head><meta charset="utf-8">'
            f"<title>{title}</title></head>\n<body>\n<h1>{title}</h1>\n{self.to_svg()}\n"
            "<details><summary>Mermaid</summary><pre>"
            f"{html.escape(self.to_mermaid())}</pre></details>\n</body></html>\n"
        )


class _Builder:
    def __init__(self, title: str, max_label_length: int | None) -> None:
        self.graph = FlowGraph(title)
        self._nodes: dict[str, FlowNode] = {}
        self._edges: dict[tuple[str, str], FlowEdge] = {}
        self._max = max_label_length

    def node(self, node_id: str, label: str, kind: str, *, seen: bool = False) -> str:
        old = self._nodes.get(node_id)
        if self._max is not None and len(label) > self._max:
            label = label[: max(self._max - 1, 1)] + "…"
        count = (old.count if old else 0) + (1 if seen else 0)
        self._nodes[node_id] = FlowNode(node_id, old.label if old else label, kind, count)
        return node_id

    def edge(self, source: str, target: str, *, seen: bool = False) -> None:
        old = self._edges.get((source, target))
        count = (old.count if old else 0) + (1 if seen else 0)
        self._edges[(source, target)] = FlowEdge(source, target, count)

    def build(self) -> FlowGraph:
        self.graph.nodes = list(self._nodes.values())
        self.graph.edges = list(self._edges.values())
        return self.graph


def _event_kind(t: type[Event]) -> str:
    if issubclass(t, StartEvent):
        return "start"
    if issubclass(t, StopEvent):
        return "stop"
    if issubclass(t, InputRequiredEvent | HumanResponseEvent):
        return "external"
    return "event"


def _workflow_class(workflow: Workflow | type[Workflow]) -> type[Workflow]:
    return workflow if isinstance(workflow, type) else type(workflow)


def workflow_graph(
    workflow: Workflow | type[Workflow], *, max_label_length: int | None = None
) -> FlowGraph:
    """Every flow the steps allow: each event type to the steps that accept it, each
    step to the event types it returns (its return annotation)."""
    cls = _workflow_class(workflow)
    b = _Builder(f"{cls.__name__}: all possible flows", max_label_length)
    for info in cls.steps().values():
        step_id = b.node(f"step:{info.name}", info.name, "step")
        for t in info.accepts:
            b.edge(b.node(f"event:{t.__name__}", t.__name__, _event_kind(t)), step_id)
        for t in info.returns:
            b.edge(step_id, b.node(f"event:{t.__name__}", t.__name__, _event_kind(t)))
    return b.build()


def _event_name(journal: Journal, entry: Any) -> str:
    try:
        payload = journal.decode_entry(entry, strict=False)
    except Exception:
        return "Event"
    event = payload.get("event") if isinstance(payload, dict) else None
    if isinstance(event, Undecoded):
        name = event.type_name or "Event"
        return re.split(r"[:.]", name)[-1]
    return type(event).__name__ if event is not None else "Event"


def _detail(journal: Journal, entry: Any) -> dict[str, Any]:
    try:
        payload = journal.decode_entry(entry, strict=False)
    except Exception:
        return {}
    return payload if isinstance(payload, dict) else {}


def run_graph(
    run_id: str,
    *,
    engine: Engine | None = None,
    unrolled: bool = False,
    max_label_length: int | None = None,
) -> FlowGraph:
    """What a workflow run did, from its journal (a fork's with its source's history):
    the steps that completed, the events each consumed and emitted, the StopEvent.
    By default one node per step and per event type, counted; ``unrolled`` draws each
    step execution and each event delivery as its own node, linked as they happened."""
    journal = (engine or default_engine()).journal
    run = journal.get_run(run_id)
    if run.kind != "workflow":
        raise DrawingError(f"run {run_id!r} is not a workflow run: it has no step graph")
    b = _Builder(f"{run.name}: run {run_id}", max_label_length)
    _fold_run(journal, run, b, unrolled)
    return b.build()


def _fold_run(journal: Journal, run: Run, b: _Builder, unrolled: bool) -> None:
    events: dict[str, str] = {}  # delivery key -> node id
    group: list[str] = []  # keys a step emitted, until its step.completed
    completions = 0
    received = False
    last_step: dict[str, str] = {}

    def event_node(key: str, name: str, kind: str) -> str:
        node = events.get(key)
        if node is None:
            node = b.node(f"event:{name}#{key}" if unrolled else f"event:{name}", name, kind)
            events[key] = node
        return node

    for segment_id, upto in lineage(journal, run):
        segment = journal.get_run(segment_id)
        for entry in journal.read(segment_id, segment.horizon + 1, upto):
            kind, key = entry.kind, entry.key or ""
            if kind == K.EVENT_RECEIVED:
                received = True
                event_node(key, _event_name(journal, entry), "external")
            elif kind == K.EVENT_EMITTED and entry.step is None:
                outside = "external" if received or completions else "start"
                node = event_node(key, _event_name(journal, entry), outside)
                b.node(node, "", outside, seen=True)
            elif kind == K.EVENT_EMITTED:
                group.append(key)
            elif kind == K.STEP_COMPLETED:
                completions += 1
                done = P.read_step_completed(_detail(journal, entry))
                name = entry.step or "?"
                step_id = f"step:{name}#{completions}" if unrolled else f"step:{name}"
                b.node(step_id, name, "step", seen=True)
                last_step[name] = step_id
                consumed = event_node(key, done.consumed or "Event", "event")
                b.edge(consumed, step_id, seen=True)
                for out_key, out_name in zip(group, done.emitted, strict=False):
                    node = event_node(out_key, str(out_name), "event")
                    b.node(node, "", "event", seen=True)
                    b.edge(step_id, node, seen=True)
                group = []
                if done.stopped:
                    returned = done.returned
                    stop = returned if isinstance(returned, str) and returned else "StopEvent"
                    node = b.node(f"event:{stop}", stop, "stop", seen=True)
                    b.edge(step_id, node, seen=True)
            elif kind == K.RUN_FAILED:
                failed = P.read_run_failed(_detail(journal, entry))
                step = failed.step
                label = f"failed: {failed.type or 'error'}"
                node = b.node(f"failed:{entry.seq}", label, "failed", seen=True)
                if step:
                    source = last_step.get(step) or b.node(f"step:{step}", step, "step")
                    b.edge(source, node, seen=True)
            elif kind in (K.STEP_FAILED, K.RUN_COMPLETED, K.RUN_CANCELLED):
                group = []


# -- rendering ----------------------------------------------------------------------------

_NODE_H = 34
_ROW_GAP = 56
_COL_GAP = 24
_MARGIN = 20


def _width(label: str) -> int:
    return max(72, int(7.4 * len(label)) + 28)


def _levels(graph: FlowGraph) -> dict[str, int]:
    """Breadth-first layers from the nodes nothing leads to; a loop's edge back up
    keeps its target where it was first reached."""
    succ: dict[str, list[str]] = {n.id: [] for n in graph.nodes}
    preds: dict[str, list[str]] = {n.id: [] for n in graph.nodes}
    for e in graph.edges:
        succ[e.source].append(e.target)
        preds[e.target].append(e.source)
    level: dict[str, int] = {}

    def spread(roots: Iterable[str]) -> None:
        queue = deque(roots)
        while queue:
            n = queue.popleft()
            for m in succ[n]:
                if m not in level:
                    level[m] = level[n] + 1
                    queue.append(m)

    roots = [n.id for n in graph.nodes if not preds[n.id]]
    for r in roots:
        level[r] = 0
    spread(roots)
    for n in graph.nodes:  # parts reached by no root (a cycle of their own)
        if n.id not in level:
            level[n.id] = 1 + max((level[p] for p in preds[n.id] if p in level), default=-1)
            spread([n.id])
    return level


def _svg(graph: FlowGraph) -> str:
    level = _levels(graph)
    rows: dict[int, list[FlowNode]] = {}
    for n in graph.nodes:
        rows.setdefault(level[n.id], []).append(n)
    row_width = {
        r: sum(_width(n.label) for n in ns) + _COL_GAP * (len(ns) - 1) for r, ns in rows.items()
    }
    content = max(row_width.values(), default=0)
    backs = sum(1 for e in graph.edges if level[e.target] <= level[e.source])
    width = content + 2 * _MARGIN + (24 + 10 * backs if backs else 0)
    height = (max(rows, default=-1) + 1) * (_NODE_H + _ROW_GAP) - _ROW_GAP + 2 * _MARGIN + 4 * backs
    pos: dict[str, tuple[float, float, int]] = {}  # centre x, top y, width
    for r, ns in rows.items():
        x = _MARGIN + (content - row_width[r]) / 2
        for n in ns:
            w = _width(n.label)
            pos[n.id] = (x + w / 2, _MARGIN + r * (_NODE_H + _ROW_GAP), w)
            x += w + _COL_GAP
    title = html.escape(graph.title)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="flow-graph" width="{width:.0f}" '
        f'height="{max(height, 2 * _MARGIN):.0f}" viewBox="0 0 {width:.0f} '
        f'{max(height, 2 * _MARGIN):.0f}" role="img" aria-label="{title}">',
        f"<title>{title}</title>",
        '<defs><marker id="flow-arrow" viewBox="0 0 10 10" refX="10" refY="5" '
        'markerWidth="7" markerHeight="7" orient="auto-start-reverse">'
        '<path d="M0,0 L10,5 L0,10 z" fill="#555555"/></marker></defs>',
    ]
    lane = _MARGIN + content + 24.0  # loops go back up right of every node
    for e in graph.edges:
        sx, sy, _ = pos[e.source]
        tx, ty, _ = pos[e.target]
        if ty > sy:
            d = f"M{sx:.1f},{sy + _NODE_H:.1f} L{tx:.1f},{ty:.1f}"
            mx, my = (sx + tx) / 2, (sy + _NODE_H + ty) / 2
        else:  # back up to an earlier layer: along the row gaps and a lane right of all
            right, shift = lane, 8 + 4 * (lane - _MARGIN - content - 24) / 10
            lane += 10
            below, above = sy + _NODE_H + shift, ty - shift
            d = (
                f"M{sx:.1f},{sy + _NODE_H:.1f} L{sx:.1f},{below:.1f} L{right:.1f},{below:.1f} "
                f"L{right:.1f},{above:.1f} L{tx:.1f},{above:.1f} L{tx:.1f},{ty:.1f}"
            )
            mx, my = right - 2, (below + above) / 2
        source, target = html.escape(e.source), html.escape(e.target)
        out.append(
            f'<path class="flow-edge" data-source="{source}" data-target="{target}" d="{d}" '
            'fill="none" stroke="#555555" stroke-width="1.4" marker-end="url(#flow-arrow)"/>'
        )
        if e.count > 1:
            out.append(
                f'<text x="{mx + 4:.1f}" y="{my:.1f}" font-size="11" font-family="sans-serif" '
                f'fill="#333333">x{e.count}</text>'
            )
    for n in graph.nodes:
        cx, y, w = pos[n.id]
        rx = 4 if n.kind in ("step", "failed") else _NODE_H / 2
        label = html.escape(n.label)
        tip = f"{label} ({n.kind}{f', {n.count} times' if n.count else ''})"
        out.append(
            f'<g class="flow-node flow-{n.kind}" data-id="{html.escape(n.id)}">'
            f"<title>{tip}</title>"
            f'<rect x="{cx - w / 2:.1f}" y="{y:.1f}" width="{w}" height="{_NODE_H}" rx="{rx:.0f}" '
            f'fill="{COLORS.get(n.kind, "#DDDDDD")}" stroke="#333333" stroke-width="1"/>'
            f'<text x="{cx:.1f}" y="{y + _NODE_H / 2 + 4:.1f}" text-anchor="middle" '
            f'font-size="13" font-family="sans-serif" fill="#000000">{label}</text></g>'
        )
    out.append("</svg>")
    return "\n".join(out)


def _mermaid_text(label: str) -> str:
    return html.escape(label).replace("|", "&#124;")


def _write(graph: FlowGraph, filename: str | Path) -> None:
    path = Path(filename)
    text = graph.to_mermaid() if path.suffix.lower() in MERMAID_EXTENSIONS else graph.to_html()
    path.write_text(text, encoding="utf-8")


def draw_all_possible_flows(
    workflow: Workflow | type[Workflow],
    filename: str | Path = "workflow_all_flows.html",
    notebook: bool = False,
    max_label_length: int | None = None,
) -> None:
    """Write every flow of ``workflow`` (a class or an instance) to ``filename``: a
    self-contained HTML page, or Mermaid text for ``.mmd``/``.mermaid``/``.md``.
    ``notebook`` is accepted for LlamaIndex's signature."""
    _write(workflow_graph(workflow, max_label_length=max_label_length), filename)


def draw_all_possible_flows_mermaid(
    workflow: Workflow | type[Workflow],
    filename: str | Path | None = "workflow_all_flows.mermaid",
    max_label_length: int | None = None,
) -> str:
    """Every flow of ``workflow`` as Mermaid text, also written to ``filename`` if given."""
    text = workflow_graph(workflow, max_label_length=max_label_length).to_mermaid()
    if filename:
        Path(filename).write_text(text, encoding="utf-8")
    return text


def _recent_run(target: Any) -> tuple[str, Engine]:
    """(run id, engine) of a handler's run, or of the newest run of a workflow."""
    from .workflow import Workflow, WorkflowHandler  # noqa: PLC0415 - workflow imports drawing's peers

    if isinstance(target, WorkflowHandler):
        return target.run_id, target.engine
    if isinstance(target, Workflow):
        eng = target.engine
        runs = eng.journal.list_runs(name=type(target)._name, limit=1, newest_first=True)
        if not runs:
            raise DrawingError(f"No runs found in workflow {type(target)._name!r}")
        return runs[0].run_id, eng
    raise TypeError(f"expected a WorkflowHandler or a Workflow, not {type(target).__name__}")


def draw_most_recent_execution(
    handler: WorkflowHandler | Workflow,
    filename: str | Path = "workflow_recent_execution.html",
    notebook: bool = False,
    max_label_length: int | None = None,
) -> None:
    """Write what a run did, read from the journal, to ``filename`` (HTML, or Mermaid
    for ``.mmd``/``.mermaid``/``.md``): the handler's run, or a workflow's newest run.
    Each step execution and event is its own node, as in LlamaIndex."""
    run_id, eng = _recent_run(handler)
    graph = run_graph(run_id, engine=eng, unrolled=True, max_label_length=max_label_length)
    _write(graph, filename)


def draw_most_recent_execution_mermaid(
    handler: WorkflowHandler | Workflow,
    filename: str | Path | None = "workflow_recent_execution.mermaid",
    max_label_length: int | None = None,
) -> str:
    """What a run did as Mermaid text, also written to ``filename`` if given."""
    run_id, eng = _recent_run(handler)
    text = run_graph(
        run_id, engine=eng, unrolled=True, max_label_length=max_label_length
    ).to_mermaid()
    if filename:
        Path(filename).write_text(text, encoding="utf-8")
    return text
