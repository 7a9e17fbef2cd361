"""Generate wardready's Grafana dashboards (grafana/dashboards/*.json) from this file.

    .venv/bin/python grafana/build.py           # (re)write the JSON
    .venv/bin/python grafana/build.py --check   # exit 1 if the JSON on disk is stale

Plain Python, no third-party library, and the criteria table (wardready/model/criteria.py)
for what the ward's link is judged on: a few helpers (`panel`, `target`, `query_var`, `row`,
`dashboard`) and one function per dashboard. Panels are laid out left to right in the order
given, wrapping at Grafana's 24 columns. Every expression is plain PromQL once the template
variables are replaced by a value (`=~"$var"` for multi-value variables, whose All is ".*");
`queries()` and `variables()` list them for tests that run them against a real Prometheus.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from wardready.core import i18n
from wardready.core.i18n import N_, _
from wardready.model import criteria

OUT = Path(__file__).resolve().parent / "dashboards"
DS = {"type": "prometheus", "uid": "wardready-prometheus"}
SCHEMA_VERSION = 39
VAR_RE = re.compile(r"\$(?:\{(\w+)(?::\w+)?\}|(\w+))")

Json = dict[str, Any]

# Value mappings shared by the panels showing the server's verdicts.
# Marked for the catalogue, translated where a dashboard is built (`mappings`).
READINESS = {-1: (N_("unknown"), "text"), 0: (N_("ready"), "green"),
             1: (N_("warnings"), "yellow"), 2: (N_("not ready"), "red")}
VERDICT = {-1: (N_("unknown"), "text"), 0: (N_("pass"), "green"), 1: (N_("warn"), "yellow"),
           2: (N_("fail"), "red")}
UP = {0: (N_("down"), "red"), 1: (N_("up"), "green")}
REACHABLE = {0: (N_("blocked"), "red"), 1: (N_("reachable"), "green")}


# --- helpers -----------------------------------------------------------------------------

def target(expr: str, legend: str = "", *, table: bool = False, ref: str = "A") -> Json:
    """One Prometheus query; `table` makes it an instant query formatted as a table."""
    t: Json = {"datasource": DS, "expr": expr, "refId": ref, "legendFormat": legend or "__auto"}
    if table:
        t.update(format="table", instant=True, range=False)
    else:
        t.update(format="time_series", instant=False, range=True)
    return t


def legend(message: str) -> str:
    """A translated legend: its {fields} become Grafana's {{label}} (translators never see
    Grafana's syntax)."""
    return message.format(**{name: f"{{{{{name}}}}}" for name in
                             ("ward", "host", "device", "platform", "check", "reason")})


def mappings(values: dict[int, tuple[str, str]]) -> list[Json]:
    return [{"type": "value", "options": {
        str(v): {"text": _(text), "color": color, "index": i}
        for i, (v, (text, color)) in enumerate(sorted(values.items()))}}]


def thresholds(*steps: tuple[float | None, str]) -> Json:
    return {"mode": "absolute", "steps": [{"value": v, "color": c} for v, c in steps]}


def override(name: str, **props: Any) -> Json:
    """Field properties for the field (column, series) displayed as `name`."""
    return {"matcher": {"id": "byName", "options": name},
            "properties": [{"id": k.replace("__", "."), "value": v} for k, v in props.items()]}


def requirement_line() -> Json:
    """The requirement, drawn dashed red."""
    return override(_("requirement"), color={"mode": "fixed", "fixedColor": "red"},
                    custom__lineStyle={"fill": "dash", "dash": [10, 10]},
                    custom__fillOpacity=0)


def window_line(name: str) -> Json:
    """The ward's window statistic, drawn thick and purple."""
    return override(name, color={"mode": "fixed", "fixedColor": "purple"},
                    custom__lineWidth=3, custom__fillOpacity=0)


def panel(kind: str, title: str, targets: list[Json], *, w: int = 12, h: int = 8,
          description: str = "", unit: str | None = None, mapping: dict | None = None,
          steps: tuple[tuple[float | None, str], ...] | None = None,
          overrides: list[Json] | None = None, transformations: list[Json] | None = None,
          options: Json | None = None, custom: Json | None = None,
          minmax: tuple[float, float] | None = None) -> Json:
    """A panel; `w`/`h` are its size in grid units, its place is set by `dashboard`."""
    for i, t in enumerate(targets):
        t["refId"] = chr(ord("A") + i)
    defaults: Json = {}
    if unit:
        defaults["unit"] = unit
    if mapping:
        defaults["mappings"] = mappings(mapping)
        defaults["color"] = {"mode": "thresholds"}
    if steps:
        defaults["thresholds"] = thresholds(*steps)
        defaults["color"] = {"mode": "thresholds"}
    if custom:
        defaults["custom"] = custom
    if minmax:
        defaults["min"], defaults["max"] = minmax
    p: Json = {"type": kind, "title": title, "datasource": DS, "targets": targets,
               "gridPos": {"w": w, "h": h},
               "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
               "options": options or {}}
    if description:
        p["description"] = description
    if transformations:
        p["transformations"] = transformations
    return p


def stat(title: str, expr: str, *, description: str = "", color: str = "blue",
         mapping: dict | None = None, unit: str | None = None, w: int = 4) -> Json:
    return panel("stat", title, [target(expr, title, table=False)], w=w, h=4,
                 description=description, unit=unit, mapping=mapping,
                 steps=None if mapping else ((None, color),),
                 options={"reduceOptions": {"calcs": ["lastNotNull"], "fields": "",
                                            "values": False},
                          "colorMode": "background", "graphMode": "none",
                          "textMode": "value_and_name" if mapping else "value"})


def timeseries(title: str, targets: list[Json], **kw: Any) -> Json:
    kw.setdefault("options", {"legend": {"displayMode": "table", "placement": "bottom",
                                         "calcs": ["lastNotNull", "min", "max"]},
                              "tooltip": {"mode": "multi", "sort": "desc"}})
    return panel("timeseries", title, targets, **kw)


def state_timeline(title: str, targets: list[Json], mapping: dict, **kw: Any) -> Json:
    kw.setdefault("options", {"showValue": "never", "mergeValues": True,
                              "legend": {"showLegend": False}})
    return panel("state-timeline", title, targets, mapping=mapping, **kw)


def table(title: str, targets: list[Json], *, hide: tuple[str, ...] = (),
          rename: dict[str, str] | None = None, join: str | None = None,
          merge: bool = False, matrix: tuple[str, str] | None = None,
          sort: str | None = None, **kw: Any) -> Json:
    """A table of instant queries: joined on the `join` column (or merged, or pivoted to
    one row per `matrix[0]` and one column per `matrix[1]`), with the columns in `hide`
    dropped (Time columns always are) and those in `rename` renamed."""
    steps: list[Json] = []
    if matrix:
        steps.append({"id": "groupingToMatrix", "options": {
            "rowField": matrix[0], "columnField": matrix[1], "valueField": "Value"}})
    if join:
        steps.append({"id": "joinByField", "options": {"byField": join, "mode": "outer"}})
    elif merge:
        steps.append({"id": "merge", "options": {}})
    excluded = {"Time": True, "__name__": True, "job": True, "instance": True}
    excluded.update({f"Time {i}": True for i in range(1, len(targets) + 1)})
    excluded.update({name: True for name in hide})
    steps.append({"id": "organize", "options": {"excludeByName": excluded,
                                                "renameByName": rename or {}}})
    kw.setdefault("options", {"showHeader": True, "cellHeight": "sm",
                              "sortBy": [{"displayName": sort, "desc": True}] if sort else []})
    return panel("table", title, targets, transformations=steps, **kw)


def _alert_words() -> Any:
    """prometheus/build.py, whose tables name the labels' values (criterion, item, segment,
    reason) for people: the dashboards call them as the alerts do."""
    import importlib.util
    # The checkout the wardready package runs from (this file may be a copy elsewhere).
    path = Path(criteria.__file__).resolve().parents[2] / "prometheus" / "build.py"
    spec = importlib.util.spec_from_file_location("wardready_rules_build", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


WORDS = _alert_words()
REASON_TEXTS = {"link short": N_("link short"), "equipment missing": N_("equipment missing"),
                "criterion failed": N_("criterion failed")}
"""The reasons the city's failing-wards table writes (label_replace in its queries)."""


def renamed(columns: dict[str, str]) -> dict[str, str]:
    """The columns (a query's labels) the current language names otherwise: none in English,
    where a label's column keeps the label's name."""
    return {label: name for label, name in columns.items() if name != label}


def value_texts(column: str, names: dict[str, str]) -> list[Json]:
    """A column's values (label values, codes) shown in the current language's words: no
    override in English, which shows the codes."""
    shown = {code: _(name) for code, name in names.items() if _(name) != code}
    if i18n.language() == i18n.DEFAULT or not shown:
        return []
    return [override(column, mappings=[{"type": "value", "options": {
        code: {"text": text, "index": i} for i, (code, text) in enumerate(shown.items())}}])]


def colored(name: str, mapping: dict[int, tuple[str, str]]) -> Json:
    """A table column shown as its mapped text on its mapped colour."""
    return override(name, mappings=mappings(mapping),
                    custom__cellOptions={"type": "color-background", "mode": "basic"},
                    color={"mode": "thresholds"})


def query_var(name: str, query: str, label: str, *, multi: bool = False) -> Json:
    """A query variable from `label_values(...)`; multi-value ones include All (".*")."""
    v: Json = {"type": "query", "name": name, "label": label, "datasource": DS,
               "query": query, "definition": query, "refresh": 2, "sort": 1,
               "multi": multi, "includeAll": multi, "hide": 0, "regex": "", "options": []}
    if multi:
        v["allValue"] = ".*"
        v["current"] = {"selected": True, "text": ["All"], "value": ["$__all"]}
    return v


def row(title: str, panels: list[Json], *, collapsed: bool = True) -> Json:
    return {"type": "row", "title": title, "collapsed": collapsed,
            "gridPos": {"w": 24, "h": 1}, "panels": panels if collapsed else []}


def _place(panels: list[Json], y: int = 0) -> int:
    """Set each panel's x/y, flowing left to right; returns the next free y."""
    x, line_h = 0, 0
    for p in panels:
        pos = p["gridPos"]
        if p["type"] == "row" or x + pos["w"] > 24:
            x, y, line_h = 0, y + line_h, 0
        pos["x"], pos["y"] = x, y
        if p["type"] == "row":
            y += 1
            y = _place(p["panels"], y) if p["collapsed"] else y
            continue
        x += pos["w"]
        line_h = max(line_h, pos["h"])
    return y + line_h


def _all_panels(panels: list[Json]) -> list[Json]:
    out = []
    for p in panels:
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def uid(base: str) -> str:
    """A dashboard's uid in the current language: the English one's, `-vi` for Vietnamese."""
    lang = i18n.language()
    return base if lang == i18n.DEFAULT else f"{base}-{lang}"


def tag() -> str:
    """The tag of the current language's dashboards, which their links list: each language
    links to its own."""
    return uid("wardready")


def dashboard(base_uid: str, title: str, description: str, panels: list[Json],
              variables: list[Json], *, time_from: str = "now-24h") -> Json:
    _place(panels)
    for i, p in enumerate(_all_panels(panels), start=1):
        p["id"] = i
    return {
        "uid": uid(base_uid), "title": title, "description": description,
        "tags": [tag()], "editable": True, "graphTooltip": 1,
        "schemaVersion": SCHEMA_VERSION, "version": 1, "timezone": "browser",
        "time": {"from": time_from, "to": "now"}, "refresh": "1m",
        "annotations": {"list": []}, "fiscalYearStartMonth": 0, "liveNow": False,
        "links": [{"type": "dashboards", "tags": [tag()], "asDropdown": False,
                   "includeVars": False, "keepTime": True, "title": "wardready",
                   "icon": "external link", "tooltip": "", "url": "", "targetBlank": False}],
        "templating": {"list": variables},
        "panels": panels,
    }


# --- what tests run ----------------------------------------------------------------------

def queries(dashboard: Json) -> list[tuple[str, str]]:
    """(panel title, expr) for every target of every panel, rows' panels included."""
    return [(p["title"], t["expr"]) for p in _all_panels(dashboard["panels"])
            for t in p.get("targets", [])]


def variables(dashboard: Json) -> list[tuple[str, str]]:
    """(variable name, its label_values(...) query) for every template variable."""
    out = []
    for v in dashboard["templating"]["list"]:
        q = v["query"]
        out.append((v["name"], q["query"] if isinstance(q, dict) else q))
    return out


def used_variables(expr: str) -> set[str]:
    """The template variables an expression refers to ($name or ${name})."""
    return {a or b for a, b in VAR_RE.findall(expr)}


# --- City overview -----------------------------------------------------------------------

# The inventory's wards that the selected working groups, former provinces and former
# districts hold (the units before the 2025 merger: Bình Dương, Bà Rịa - Vũng Tàu, the city).
WARDS = ('wardready_ward_info{working_group=~"$working_group",'
         'former_province=~"$former_province",'
         'former_district=~"$former_district"}')


def _count(expr: str) -> str:
    return f"count({expr}) or vector(0)"


def city() -> Json:
    ward_col = _("ward")
    ward_link = override(ward_col, links=[{
        "title": _("Ward detail"),
        "url": f"/d/{uid('wardready-ward')}/ward-detail?var-ward=${{__value.text}}"}])
    panels = [
        stat(_("Wards ready"), _count(f"(wardready_ward_readiness == 0) and on (ward) {WARDS}"),
             color="green",
             description=_("Server verdict 0: ready for the city's video meetings.")),
        stat(_("Ready with warnings"),
             _count(f"(wardready_ward_readiness == 1) and on (ward) {WARDS}"), color="yellow"),
        stat(_("Not ready"), _count(f"(wardready_ward_readiness == 2) and on (ward) {WARDS}"),
             color="red"),
        stat(_("Unknown"), _count(f"(wardready_ward_readiness == -1) and on (ward) {WARDS}"),
             color="text", description=_("No PC of the ward counted (none reported recently).")),
        stat(_("Wards with no agent"),
             _count(f"{WARDS} unless on (ward) wardready_agent_last_report_timestamp_seconds"),
             color="orange", description=_("Inventory wards whose agents never reported.")),
        stat(_("Wards in selection"), _count(WARDS), color="blue"),
        table(_("Every ward"), [
            target(f"max by (ward, name, working_group, former_district) ({WARDS})",
                   table=True),
            target(f"max by (ward) (wardready_ward_readiness and on (ward) {WARDS})",
                   table=True),
            target(f"max by (ward) (ward:wardready_shortfalls:count and on (ward) {WARDS})",
                   table=True),
        ], join="ward", hide=("Value #A",),
            rename={"name": _("Name"), "working_group": _("Working group"),
                    "former_district": _("Former district"), "Value #B": _("Readiness"),
                    "Value #C": _("Shortfalls"), **renamed({"ward": ward_col})},
            overrides=[colored(_("Readiness"), READINESS), ward_link],
            w=24, h=14, description=_("Readiness: the server's verdict. Shortfalls: criteria "
            "and items the ward falls short on (empty for a ward without reports).")),
        table(_("Failing wards and why"), [
            target("label_replace(max by (ward, criterion) (ward_criterion:wardready_shortfall"
                   f':ratio > 0 and on (ward) {WARDS}), "reason", "link short", "", "")',
                   table=True),
            target("label_replace(max by (ward, item) (ward_item:wardready_missing:count > 0"
                   f' and on (ward) {WARDS}), "reason", "equipment missing", "", "")',
                   table=True),
            target("label_replace(max by (ward, criterion) (wardready_ward_criterion_verdict"
                   f' == 2 and on (ward) {WARDS}), "reason", "criterion failed", "", "")',
                   table=True),
        ], merge=True, hide=("Value #C",),
            rename={"Value #A": _("Shortfall (ratio of requirement)"),
                    "Value #B": _("Items missing"),
                    **renamed({"ward": ward_col, "criterion": _("criterion"),
                               "item": _("item"), "reason": _("reason")})},
            overrides=[override(_("Shortfall (ratio of requirement)"), unit="percentunit"),
                       ward_link, *value_texts(_("criterion"), WORDS.CRITERIA),
                       *value_texts(_("item"), WORDS.ITEMS),
                       *value_texts(_("reason"), REASON_TEXTS)],
            w=14, h=12, description=_("One row per reason: a link figure short of the "
            "requirement over its window, equipment missing, or a readiness criterion "
            "failed.")),
        table(_("Firing alerts"), [
            target('(ALERTS{alertstate="firing"} and on (ward) ' + WARDS + ")"
                   ' or ALERTS{alertstate="firing",ward=""}', table=True),
        ], hide=("Value", "alertstate"),
            rename={"alertname": _("Alert"),
                    **renamed({"ward": ward_col, "name": _("name"),
                               "working_group": _("working_group"),
                               "severity": _("severity")})},
            overrides=[ward_link, *value_texts(_("severity"), WORDS.SEVERITIES)], w=10, h=12,
            description=_("Alerts firing now in the selected wards, and alerts about no ward.")),
    ]
    group_vars = [
        query_var("working_group", "label_values(wardready_ward_info, working_group)",
                  _("Working group"), multi=True),
        query_var("former_province", "label_values(wardready_ward_info, former_province)",
                  _("Former province"), multi=True),
        query_var("former_district", "label_values(wardready_ward_info, former_district)",
                  _("Former district"), multi=True),
    ]
    return dashboard("wardready-city", _("wardready: city overview"),
                     _("Which wards are ready for the city's video meetings, and why not."),
                     panels, group_vars, time_from="now-6h")


# --- Ward detail -------------------------------------------------------------------------

W = 'ward="$ward"'


LINK_PANELS: dict[str, tuple[str, str, str]] = {
    "download": (N_("Download"), "Bps", N_("Each PC's speed tests")),
    "upload": (N_("Upload"), "Bps", N_("Each PC's speed tests")),
    "rtt": (N_("Round-trip time (media, median)"), "s", N_("UDP media path")),
    "jitter": (N_("Jitter (media, worse direction)"), "s",
               N_("The worse of forward and return jitter per PC")),
    "loss": (N_("Loss (media, worse direction)"), "percentunit",
             N_("The worse of forward and return loss per PC")),
}
"""Title, unit and what each PC's line is, per link criterion of the table."""


def _link_panel(c: criteria.LinkCriterion) -> Json:
    """Each PC's figure from its first source, against the requirement and the ward's
    window statistic the rules judge it on (wardready/model/criteria.py)."""
    title, unit, what = LINK_PANELS[c.id]
    window = _("ward, {hours} h window").format(hours=f"{c.window_hours:g}")
    statistic = _("{nth}th percentile").format(nth=round(c.quantile * 100))
    judged = (_("{what}; the ward is judged on the {statistic} of its best PC over {hours} h "
                "(latency probes stand in for a PC without UDP).") if len(c.sources) > 1 else
              _("{what}; the ward is judged on the {statistic} of its best PC over {hours} h."))
    return timeseries(_(title), [
        target(c.sources[0].pc_expr(W), "{{host}}"),
        target(f"{c.requirement.spec.name}{{{W}}}", _("requirement")),
        target(f"{c.window_record}{{{W}}}", window),
    ], unit=unit, overrides=[requirement_line(), window_line(window)],
        description=judged.format(what=_(what), statistic=statistic,
                                  hours=f"{c.window_hours:g}"))


def ward() -> Json:
    lines = {"lineWidth": 1, "fillOpacity": 0, "spanNulls": True, "showPoints": "auto"}
    devices = row(_("Network devices"), [
        state_timeline(_("Devices up"), [
            target(f"wardready_device_up{{{W}}}", legend(_("{device} (seen by {host})")))],
            UP, w=16, h=8, description=_("Routers, switches and access points the agents "
            "probe. Empty when no agent of the ward runs the devices check.")),
        table(_("Devices"), [target(f"wardready_device_info{{{W}}}", table=True)],
              hide=("Value", "ward"), w=8, h=8,
              description=_("Empty when no agent of the ward runs the devices check.")),
    ])
    panels = [
        stat(_("Readiness"), f"wardready_ward_readiness{{{W}}}", mapping=READINESS, w=6),
        stat(_("Shortfalls"), f"ward:wardready_shortfalls:count{{{W}}}", w=6, color="orange",
             description=_("Criteria and items the ward falls short on; 0 when it meets its "
             "profile, nothing when it has no reports.")),
        stat(_("PCs reporting"), f"count(wardready_agent_last_report_timestamp_seconds{{{W}}})"
             " or vector(0)", w=6),
        stat(_("Last report"), f"time() - max(wardready_agent_last_report_timestamp_seconds"
             f"{{{W}}})", unit="s", w=6, color="text"),
        *(_link_panel(c) for c in criteria.LINK),
        timeseries(_("Continuous probe: loss over the last hour"), [
            target(f"host:wardready_probe_loss:ratio_1h{{{W}}}", "{{host}}")],
            unit="percentunit", custom=lines, description=_("Each PC's probes lost over the "
            "last hour, from the continuous probe's counters (one UDP probe a second to the "
            "server's echo; an hour's 3,600 tell loss to about half a point).")),
        timeseries(_("Continuous probe: RTT and jitter over the last hour"), [
            target(f"host:wardready_probe_rtt_seconds:p50_1h{{{W}}}", legend(_("{host} median"))),
            target(f"host:wardready_probe_rtt_seconds:p95_1h{{{W}}}", legend(_("{host} p95")),
                   ref="B"),
            target(f"host:wardready_probe_jitter_seconds:mean_1h{{{W}}}",
                   legend(_("{host} jitter")), ref="C")],
            unit="s", custom=lines, description=_("From the probe's RTT histogram (quantiles "
            "interpolated within its buckets) and its running sum of RTT differences.")),
        timeseries(_("Predicted MOS"), [
            target(f"wardready_media_predicted_mos{{{W}}}", "{{host}}")],
            minmax=(1, 5), custom=lines, description=_("E-model estimate of call quality, "
            "1 (bad) to 5 (excellent).")),
        state_timeline(_("UDP media path"), [
            target(f"wardready_media_udp_reachable{{{W}}}", "{{host}}")], REACHABLE,
            w=12, h=6),
        state_timeline(_("City platforms reached"), [
            target(f"wardready_platform_up{{{W}}}", legend(_("{platform} from {host}")))], UP,
            w=12, h=6),
        table(_("Criteria"), [
            target(f"max by (criterion) (wardready_ward_criterion_verdict{{{W}}})",
                   table=True)],
            rename={"criterion": _("Criterion"), "Value": _("Verdict")},
            overrides=[colored(_("Verdict"), VERDICT),
                       *value_texts(_("Criterion"), WORDS.CRITERIA)], w=6, h=12,
            description=_("The server's verdict per criterion (docs/readiness.md).")),
        table(_("Segments at fault"), [
            target(f"ward_segment:wardready_segment_faults:count{{{W}}}", table=True)],
            hide=("ward", "working_group"), sort=_("Findings"),
            rename={"segment": _("Segment"), "reason": _("Reason"), "Value": _("Findings")},
            overrides=[*value_texts(_("Segment"), WORDS.SEGMENT_WORDS),
                       *value_texts(_("Reason"), WORDS.REASON_WORDS)],
            w=8, h=12, description=_("Which segment of the path is weak (pc, lan, router, "
            "uplink) and why, most findings first (0: not at fault); `wardready-server "
            "readiness --ward` gives the evidence and the request list the fix "
            "(docs/segments.md).")),
        table(_("PCs"), [
            target(f"max by (host) (wardready_host_cpu_logical_cores{{{W}}})", table=True),
            target(f"max by (host) (wardready_host_memory_total_bytes{{{W}}})", table=True),
            target(f"max by (host, role) (wardready_host_role_info{{{W}}})", table=True),
            target(f"max by (host) (wardready_host_readiness{{{W}}})", table=True),
            target(f"max by (host) (time() - wardready_agent_last_report_timestamp_seconds"
                   f"{{{W}}})", table=True),
        ], join="host", hide=("Value #C",),
            rename={"host": _("PC"), "role": _("Role"), "Value #A": _("Logical cores"),
                    "Value #B": _("Memory"), "Value #D": _("Readiness"),
                    "Value #E": _("Last report")},
            overrides=[override(_("Memory"), unit="bytes"), override(_("Last report"), unit="s"),
                       colored(_("Readiness"), READINESS)], w=10, h=12),
        table(_("Peripherals per PC"), [
            target(f"max by (host, kind) (wardready_peripherals{{{W}}})", table=True)],
            matrix=("host", "kind"), rename={"host\\kind": _("PC")}, w=8, h=12,
            description=_("How many of each kind every PC sees.")),
        devices,
    ]
    return dashboard("wardready-ward", _("wardready: ward detail"),
                     _("One ward: its link against its requirements, its PCs and equipment."),
                     panels, [query_var("ward", "label_values(wardready_ward_info, ward)",
                                        _("Ward"))])


# --- Agent fleet -------------------------------------------------------------------------

A = 'ward=~"$ward"'
SILENT = round(criteria.AGENT_SILENT_SECONDS)  # the AgentSilent alert's limit


def fleet() -> Json:
    age = f"time() - wardready_agent_last_report_timestamp_seconds{{{A}}}"
    lines = {"lineWidth": 1, "fillOpacity": 0, "spanNulls": True, "showPoints": "auto"}
    panels = [
        stat(_("Agents reporting"), _count(f"{age} < {SILENT}"), color="green", w=6,
             description=_("Agents whose latest report is under {minutes} min old.")
             .format(minutes=SILENT // 60)),
        stat(_("Agents silent"), _count(f"{age} >= {SILENT}"), color="red", w=6,
             description=_("Agents with no report for {minutes} min or more.")
             .format(minutes=SILENT // 60)),
        stat(_("Agents known"), _count(f"wardready_agent_last_report_timestamp_seconds{{{A}}}"),
             color="blue", w=6),
        stat(_("Largest clock offset"),
             f"max(abs(wardready_agent_clock_offset_seconds{{{A}}}))", unit="s",
             color="text", w=6),
        timeseries(_("Reports per minute"), [
            target(f"60 * sum by (ward, host) "
                   f"(rate(wardready_agent_reports_total{{{A}}}[15m]))", "{{ward}}/{{host}}")],
            custom=lines, w=12, description=_("Averaged over 15 min.")),
        timeseries(_("Dropped reports (last hour)"), [
            target(f"sum by (ward, host) "
                   f"(increase(wardready_agent_dropped_reports_total{{{A}}}[1h]))",
                   "{{ward}}/{{host}}")], custom=lines, w=12,
            description=_("Reports the agent dropped undelivered (spool full or too "
            "old), as the agent last told the server.")),
        table(_("Last report age per agent"), [target(age, table=True)],
              rename={"ward": _("Ward"), "host": _("PC"), "Value": _("Last report age")},
              overrides=[override(_("Last report age"), unit="s",
                                  custom__cellOptions={"type": "color-text"},
                                  thresholds=thresholds((None, "green"), (600, "yellow"),
                                                        (SILENT, "red")))],
              sort=_("Last report age"), w=12, h=10),
        table(_("Checks failing"), [
            target(f"wardready_agent_check_success{{{A}}} == 0", table=True)],
            hide=("Value",), rename={"ward": _("Ward"), "host": _("PC"), "check": _("Check")},
            w=12, h=10, description=_("Agents whose latest run of a check failed.")),
        panel("bargauge", _("Check success"), [
            target(f"avg by (check) (wardready_agent_check_success{{{A}}})", "{{check}}",
                   table=False)], unit="percentunit", minmax=(0, 1),
            steps=((None, "red"), (0.9, "yellow"), (1, "green")), w=10, h=10,
            description=_("Share of agents whose latest run of the check succeeded."),
            options={"orientation": "horizontal", "displayMode": "basic",
                     "reduceOptions": {"calcs": ["lastNotNull"], "fields": "",
                                       "values": False}}),
        timeseries(_("Check duration (slowest agent)"), [
            target(f"max by (check) (wardready_agent_check_duration_seconds{{{A}}})",
                   "{{check}}")], unit="s", custom=lines, w=14, h=10),
        timeseries(_("Clock offset"), [
            target(f"wardready_agent_clock_offset_seconds{{{A}}}", "{{ward}}/{{host}}")],
            unit="s", custom=lines, w=14,
            description=_("Agent clock minus server clock, from each fresh report.")),
        table(_("Agent versions"), [
            target(f"count by (version) (wardready_agent_info{{{A}}})", table=True)],
            rename={"version": _("Version"), "Value": _("Agents")}, w=10,
            description=_("How many agents run each version (from their latest reports).")),
        row(_("Measurement plan: throughput tests"), plan_panels(), collapsed=False),
    ]
    return dashboard("wardready-fleet", _("wardready: agent fleet"),
                     _("Are the agents reporting, which versions run, and are their checks "
                     "working?"), panels,
                     [query_var("ward", "label_values(wardready_agent_last_report_timestamp"
                                "_seconds, ward)", _("Ward"), multi=True)])


def plan_panels() -> list[Json]:
    """What the city measurement plan does: tests held back and why, bytes spent, and how
    old each ward's uplink figure is against the plan's target (docs/measurement-plan.md)."""
    age = f"time() - wardready_ward_uplink_measured_timestamp_seconds{{{A}}}"
    lines = {"lineWidth": 1, "fillOpacity": 0, "spanNulls": True, "showPoints": "auto"}
    return [
        stat(_("Wards with a stale uplink figure"),
             _count(f"({age}) > on (ward) wardready_plan_max_age_seconds"), color="red", w=6,
             description=_("Wards whose latest throughput test is older than the plan allows "
             "(alert WardUplinkFigureStale).")),
        stat(_("Wards in a quiet window"),
             _count(f"wardready_plan_quiet_window_active{{{A}}} == 1"),
             color="blue", w=6, description=_("No throughput test may start in these now.")),
        stat(_("Tests deferred (24 h)"),
             f"sum(increase(wardready_throughput_tests_deferred_total{{{A}}}[24h]))",
             color="text", w=6),
        stat(_("Technician overrides (24 h)"),
             "sum(increase(wardready_throughput_test_overrides_total[24h]))", color="orange",
             w=6, description=_("Tests run inside a quiet window or past the budget (--now).")),
        timeseries(_("Tests deferred, by reason"), [
            target(f"sum by (reason) (increase(wardready_throughput_tests_deferred_total"
                   f"{{{A}}}[1h]))", "{{reason}}")], custom=lines, w=12,
            description=_("Per hour. quiet_window, budget, ward_in_use (a PC of the ward "
            "carries a call): the server held the test back; own_traffic, rtt_inflation: "
            "the tester found the link in use; ward_busy, city_busy: slots taken.")),
        panel("bargauge", _("Daily test budget used"), [
            target(f"wardready_plan_budget_used_bytes{{{A}}} / wardready_plan_daily_budget_bytes"
                   f"{{{A}}}", "{{ward}}", table=False)], unit="percentunit", minmax=(0, 1),
            steps=((None, "green"), (0.8, "yellow"), (1, "red")), w=12,
            description=_("Bytes the ward's tests moved today (the plan's local day) against its "
            "daily budget; at 100 % the ward's next test waits for the next day."),
            options={"orientation": "horizontal", "displayMode": "basic",
                     "reduceOptions": {"calcs": ["lastNotNull"], "fields": "",
                                       "values": False}}),
        table(_("Uplink figure age per ward"), [
            target(age, table=True),
            target(f"wardready_plan_max_age_seconds{{{A}}}", table=True, ref="B")],
            join="ward", rename={"ward": _("Ward"), "Value #A": _("Age"),
                                 "Value #B": _("Plan allows")},
            overrides=[override(_("Age"), unit="s", custom__cellOptions={"type": "color-text"},
                                thresholds=thresholds((None, "green"), (12 * 3600, "yellow"),
                                                      (24 * 3600, "red"))),
                       override(_("Plan allows"), unit="s")],
            sort=_("Age"), w=24, h=10,
            description=_("How old each ward's latest throughput test that measured anything "
            "is: the freshness of its download and upload figures.")),
    ]


# --- output ------------------------------------------------------------------------------

DASHBOARDS = {"city-overview.json": city, "ward-detail.json": ward,
              "agent-fleet.json": fleet}


LANGUAGES: tuple[i18n.Language, ...] = ("en", "vi")
"""Each dashboard is written in each language: the English one as named in DASHBOARDS, the
others beside it (`city-overview-vi.json`), with their own uid; same panels and queries,
their texts from the catalogue (wardready/locale)."""


def file_name(name: str, lang: i18n.Language) -> str:
    """The file of dashboard `name` in `lang`."""
    return name if lang == i18n.DEFAULT else name.replace(".json", f"-{lang}.json")


def boards() -> dict[str, Json]:
    """File name -> the dashboard, every language."""
    out = {}
    for lang in LANGUAGES:
        with i18n.using(lang):
            out.update({file_name(name, lang): build() for name, build in DASHBOARDS.items()})
    return out


def render() -> dict[str, str]:
    """File name -> the JSON text to write."""
    return {name: json.dumps(board, sort_keys=True, indent=2, ensure_ascii=False) + "\n"
            for name, board in boards().items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if the files on disk differ from what would be written")
    args = parser.parse_args(argv)
    files = render()
    if args.check:
        stale = [name for name, text in files.items()
                 if not (OUT / name).is_file()
                 or (OUT / name).read_text(encoding="utf-8") != text]
        extra = sorted({p.name for p in OUT.glob("*.json")} - files.keys())
        for name in stale:
            print(f"stale: grafana/dashboards/{name}", file=sys.stderr)
        for name in extra:
            print(f"not generated by build.py: grafana/dashboards/{name}", file=sys.stderr)
        if stale or extra:
            print("run: .venv/bin/python grafana/build.py", file=sys.stderr)
            return 1
        return 0
    OUT.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (OUT / name).write_text(text, encoding="utf-8")
        print(f"wrote grafana/dashboards/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
