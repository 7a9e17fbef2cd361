"""The equipment request list (`server.equipment`) as the documents people and scripts take
away: CSV and JSON for scripts, Markdown to read, and XLSX for the procurement officer of the
city's Department of Science and Technology, whose figures must add up when a line is edited
(subtotals and totals are formulas) and who prints it.

Every renderer takes the display time zone: the server stores epoch seconds, the reader lives
in one city.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict
from datetime import datetime, timedelta, tzinfo
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple

from wardready.model import criteria
from wardready.server.equipment import EquipmentList, Line, NoData

if TYPE_CHECKING:
    from openpyxl.worksheet.worksheet import Worksheet

TITLE = "Equipment request list"
NEEDS_QUOTE = "needs a quote"

CSV_COLUMNS = ("section", "working_group", "ward", "ward_name", "former_district", "priority",
               "item", "description", "quantity", "unit_price_vnd", "subtotal_vnd", "reason",
               "measured_at", "flags", "segment")


def _iso(t: float | None, tz: tzinfo) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, tz).isoformat(timespec="seconds")


def _when(t: float | None, tz: tzinfo, never: str = "") -> str:
    """For people: to the minute, with the offset so no one has to guess the zone."""
    if t is None:
        return never
    dt = datetime.fromtimestamp(t, tz)
    minutes = round((dt.utcoffset() or timedelta(0)).total_seconds() / 60)
    sign = "-" if minutes < 0 else "+"
    return f"{dt:%Y-%m-%d %H:%M} {sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def _vnd(amount: int) -> str:
    return f"{amount:,}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _no_data_wards(lst: EquipmentList) -> Counter[str]:
    """Wards per working group the list cannot judge: a group with no lines may just be silent."""
    return Counter(g for g, _ in {(n.ward.working_group, n.ward.id) for n in lst.no_data})


def _line_record(line: Line, tz: tzinfo) -> dict[str, Any]:
    return {"working_group": line.ward.working_group, "ward": line.ward.id,
            "ward_name": line.ward.name, "former_district": line.ward.former_district,
            "priority": line.priority, "item": line.item, "description": line.description,
            "quantity": line.quantity, "unit_price_vnd": line.unit_price_vnd,
            "subtotal_vnd": line.subtotal_vnd, "reason": line.reason,
            "measured_at": _iso(line.measured_at, tz), "flags": list(line.flags),
            "segment": line.segment}


def _no_data_record(entry: NoData, tz: tzinfo) -> dict[str, Any]:
    return {"working_group": entry.ward.working_group, "ward": entry.ward.id,
            "ward_name": entry.ward.name, "former_district": entry.ward.former_district,
            "reason": entry.reason, "last_report_at": _iso(entry.last_report_at, tz)}


# --- CSV -------------------------------------------------------------------------------------

def to_csv(lst: EquipmentList, tz: tzinfo) -> str:
    """One table: a row per line (section "request"), then a row per ward without data
    (section "no-data", `measured_at` = its last report). No totals: they are derivable."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, CSV_COLUMNS, lineterminator="\r\n")
    writer.writeheader()
    for line in lst.lines:
        row = _line_record(line, tz)
        row["flags"] = " ".join(line.flags)
        writer.writerow({"section": "request", **_blank_none(row)})
    for entry in lst.no_data:
        row = _no_data_record(entry, tz)
        row["measured_at"] = row.pop("last_report_at")
        writer.writerow({"section": "no-data", **_blank_none(row)})
    return buf.getvalue()


def _blank_none(row: Mapping[str, Any]) -> dict[str, Any]:
    return {k: "" if v is None else v for k, v in row.items()}


# --- JSON ------------------------------------------------------------------------------------

def to_json(lst: EquipmentList, tz: tzinfo) -> str:
    """Everything, for scripts: lines with subtotals, wards without data, item and group
    totals, the city-wide total. Times are ISO 8601 with the offset, in `tz`."""
    doc = {
        "generated_at": _iso(lst.generated_at, tz),
        "link_windows_seconds": dict(lst.windows),
        "notes": list(lst.notes),
        "working_groups": [{"id": g, "name": name} for g, name in lst.working_groups.items()],
        "lines": [_line_record(line, tz) for line in lst.lines],
        "no_data": [_no_data_record(entry, tz) for entry in lst.no_data],
        "item_totals": [asdict(t) for t in lst.item_totals()],
        "group_totals": [asdict(t) for t in lst.group_totals()],
        "total_vnd": lst.total_vnd,
        "unpriced_lines": lst.unpriced_lines,
    }
    return json.dumps(doc, ensure_ascii=False, indent=2) + "\n"


# --- Markdown --------------------------------------------------------------------------------

# Backslash-escaping these keeps inventory and evidence text literal: no emphasis, links, raw
# HTML or entities, and `|` cannot split a table cell. `#` so a heading's end is not eaten.
_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|~&#])")


def _md(text: str) -> str:
    # splitlines, not split("\n"): \r, \u2028 and friends end a table row too.
    return _MD_SPECIAL.sub(r"\\\1", " ".join(text.splitlines()))


def _md_table(header: Sequence[str], rows: Iterable[Sequence[str]],
              numeric: Iterable[int] = ()) -> list[str]:
    right = set(numeric)
    out = ["| " + " | ".join(_md(h) for h in header) + " |",
           "|" + "|".join("---:" if i in right else "---" for i in range(len(header))) + "|"]
    out += ["| " + " | ".join(_md(cell) for cell in row) + " |" for row in rows]
    return out


def _group_label(lst: EquipmentList, group: str) -> str:
    name = lst.working_groups.get(group, "")
    return f"{group} — {name}" if name else group


def _price_cells(unit_price: int | None, subtotal: int | None) -> tuple[str, str]:
    if subtotal is None:
        return (NEEDS_QUOTE if unit_price is None else _vnd(unit_price)), "—"
    # Same item at different prices: only the subtotal is meaningful.
    return ("varies" if unit_price is None else _vnd(unit_price)), _vnd(subtotal)


def to_markdown(lst: EquipmentList, tz: tzinfo) -> str:
    """A readable document: summary with totals per working group and per item, then each
    working group's lines, then the wards without data (GitHub-flavoured tables)."""
    out = [f"# {TITLE}", "",
           f"Generated {_when(lst.generated_at, tz)}. "
           f"Link figures: {criteria.windows_text(lst.windows)}.", ""]
    for note in lst.notes:
        # A prefix, not a list item: a note cannot then start a heading or a list of its own.
        out += [f"Note: {_md(note)}", ""]

    out += ["## Summary", "",
            f"City-wide total: **{_vnd(lst.total_vnd)} VND** for the priced lines. "
            f"Lines needing a quote (not in the total): {lst.unpriced_lines}.", "",
            "### Per working group", ""]
    silent = _no_data_wards(lst)
    out += _md_table(
        ("Working group", "Name", "Wards", "Lines", "Subtotal (VND)", "Lines needing a quote",
         "Wards without data"),
        ((t.working_group, t.name, str(t.wards), str(t.lines), _vnd(t.subtotal_vnd),
          str(t.unpriced_lines), str(silent[t.working_group])) for t in lst.group_totals()),
        numeric=(2, 3, 4, 5, 6))
    out += ["", "### Per item", ""]
    out += _md_table(
        ("Item", "Description", "Quantity", "Unit price (VND)", "Subtotal (VND)"),
        ((t.item or "—", t.description, str(t.quantity),
          *_price_cells(t.unit_price_vnd, t.subtotal_vnd)) for t in lst.item_totals()),
        numeric=(2, 3, 4))

    for group, lines in lst.by_group().items():
        out += ["", f"## {_md(_group_label(lst, group))}", ""]
        out += _md_table(
            ("Ward", "Former district", "Priority", "Item", "Quantity", "Unit price (VND)",
             "Subtotal (VND)", "Reason", "Measured at"),
            ((f"{line.ward.name} ({line.ward.id})", line.ward.former_district, line.priority,
              f"{line.description} ({line.item})" if line.item else line.description,
              str(line.quantity), *_price_cells(line.unit_price_vnd, line.subtotal_vnd),
              line.stated_reason, _when(line.measured_at, tz)) for line in lines),
            numeric=(4, 5, 6))
        unpriced = sum(line.subtotal_vnd is None for line in lines)
        priced = sum(line.subtotal_vnd or 0 for line in lines)
        out += ["", f"Subtotal for {_md(group)}: **{_vnd(priced)} VND**"
                    + (f"; {_plural(unpriced, 'line')} needing a quote, not included."
                       if unpriced else ".")]

    out += ["", "## No data", ""]
    if not lst.no_data:
        out.append("Every ward reported: the list above covers the whole city.")
    else:
        out += ["Nothing is known about these wards, which is not the same as needing nothing.",
                ""]
        out += _md_table(
            ("Ward", "Working group", "Reason", "Last report"),
            (((f"{e.ward.name} ({e.ward.id})"), _group_label(lst, e.ward.working_group),
              e.reason, _when(e.last_report_at, tz, never="never")) for e in lst.no_data))
    return "\n".join(out) + "\n"


# --- XLSX ------------------------------------------------------------------------------------

SUMMARY_SHEET = "Summary"
NO_DATA_SHEET = "No data"
MONEY = "#,##0"

# Group sheet: (header, width, wrapped). Quantity in G and unit price in H make the
# subtotal `=Gn*Hn`; keep them there or change _GROUP_SUBTOTAL's formula with them.
_GROUP_COLUMNS: tuple[tuple[str, float, bool], ...] = (
    ("Ward", 12, False), ("Ward name", 20, True), ("Former district", 14, True),
    ("Priority", 8, False), ("Item", 14, True), ("Description", 26, True),
    ("Quantity", 8, False), ("Unit price (VND)", 13, False), ("Subtotal (VND)", 14, False),
    ("Reason", 48, True), ("Measured at", 19, False), ("Flags", 14, True))
_NO_DATA_COLUMNS: tuple[tuple[str, float, bool], ...] = (
    ("Ward", 14, False), ("Ward name", 24, True), ("Working group", 14, False),
    ("Former district", 18, True), ("Reason", 60, True), ("Last report", 20, False))
_SUMMARY_WIDTHS = (22, 40, 12, 12, 18, 20, 18)


def _summary_columns(*headers: str) -> tuple[tuple[str, float, bool], ...]:
    return tuple((h, w, True) for h, w in zip(headers, _SUMMARY_WIDTHS, strict=False))


def _sheet_titles(groups: Iterable[str]) -> dict[str, str]:
    """Group id -> a sheet title Excel accepts (31 characters, none of []:*?/\\), unique
    without regard to case, and never one of the fixed sheets."""
    taken = {SUMMARY_SHEET.casefold(), NO_DATA_SHEET.casefold()}
    titles = {}
    for group in groups:
        base = re.sub(r"[\[\]:*?/\\]", "-", group).strip("'")[:31] or "group"
        title, n = base, 1
        while title.casefold() in taken:
            n += 1
            title = f"{base[:31 - len(str(n)) - 1]}~{n}"
        taken.add(title.casefold())
        titles[group] = title
    return titles


def _ref(sheet: str, cell: str) -> str:
    return "'" + sheet.replace("'", "''") + "'!" + cell


def to_xlsx(lst: EquipmentList, tz: tzinfo) -> bytes:
    """A workbook for the procurement officer: a Summary sheet, a sheet per working group that
    has lines (named by its id), and a No data sheet. Subtotals and totals are formulas, so
    editing a quantity or a price keeps every figure consistent; pages print A4 landscape."""
    from openpyxl import Workbook  # the agent imports this module's package, not openpyxl

    wb = Workbook()
    wb.properties.title = TITLE
    wb.properties.creator = "wardready"
    summary = wb.active
    assert summary is not None
    summary.title = SUMMARY_SHEET

    titles = _sheet_titles(lst.by_group())
    group_total_cells = {}
    for group, lines in lst.by_group().items():
        ws = wb.create_sheet(titles[group])
        group_total_cells[group] = _write_group_sheet(ws, lst, group, lines, tz)
    _write_summary(summary, lst, titles, group_total_cells, tz)
    _write_no_data(wb.create_sheet(NO_DATA_SHEET), lst, tz)

    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


def _set(ws: Worksheet, row: int, col: int, value: Any, *, money: bool = False,
         bold: bool = False, wrap: bool = False, formula: bool = False,
         left: bool = False) -> None:
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
    from openpyxl.styles import Alignment, Font

    cell = ws.cell(row=row, column=col)
    if isinstance(value, str):
        # openpyxl refuses control characters, and would take text starting with "=" (an
        # inventory name, a reason) for a formula: only our own formulas may be formulas.
        cell.value = ILLEGAL_CHARACTERS_RE.sub("", value)
        if not formula:
            cell.data_type = "s"
    else:
        cell.value = value
    if money:
        cell.number_format = MONEY
    if bold:
        cell.font = Font(bold=True)
    cell.alignment = Alignment(wrap_text=wrap, vertical="top",
                               horizontal="left" if left else None)


def _header(ws: Worksheet, row: int, columns: Sequence[tuple[str, float, bool]]) -> None:
    from openpyxl.styles import PatternFill

    for col, (text, _, _) in enumerate(columns, 1):
        _set(ws, row, col, text, bold=True, wrap=True)
        ws.cell(row=row, column=col).fill = PatternFill("solid", fgColor="DDDDDD")
    _fit_height(ws, row, {col: c[0] for col, c in enumerate(columns, 1)}, columns)


def _widths(ws: Worksheet, widths: Iterable[float]) -> None:
    from openpyxl.utils import get_column_letter

    for col, width in enumerate(widths, 1):
        ws.column_dimensions[get_column_letter(col)].width = width


def _fit_height(ws: Worksheet, row: int, texts: Mapping[int, str],
                columns: Sequence[tuple[str, float, bool]]) -> None:
    """Excel does not grow a row for wrapped text it did not type itself: size it, or the
    printed reason is cut to its first line."""
    lines = 1
    for col, text in texts.items():
        width = max(columns[col - 1][1] - 1, 1)
        lines = max(lines, sum(math.ceil(max(len(part), 1) / width)
                               for part in text.splitlines() or [""]))
    if lines > 1:
        ws.row_dimensions[row].height = 15 * lines


def _print_setup(ws: Worksheet, header_row: int | None, title: str) -> None:
    from openpyxl.worksheet.properties import PageSetupProperties

    ws.page_setup.orientation = "landscape"
    ws.page_setup.paperSize = ws.PAPERSIZE_A4
    ws.page_setup.fitToWidth = 1
    ws.page_setup.fitToHeight = 0  # as many pages tall as it takes
    ws.sheet_properties.pageSetUpPr = PageSetupProperties(fitToPage=True)
    ws.page_margins.left = ws.page_margins.right = 0.4
    if header_row is not None:
        ws.print_title_rows = f"{header_row}:{header_row}"
    # "&" starts a header/footer code: doubled, a group name prints as written.
    for part, text in ((ws.oddHeader, f"{TITLE}: {title}".replace("&", "&&")),
                       (ws.oddFooter, "Page &P of &N")):
        if part is not None:  # always made with the sheet; None only in the stubs' types
            part.center.text = text


def _write_group_sheet(ws: Worksheet, lst: EquipmentList, group: str, lines: Sequence[Line],
                       tz: tzinfo) -> str:
    """The group's lines under a header row, with the total row under them; returns the
    total cell (e.g. "I17") for the Summary to reference."""
    from openpyxl.styles import Font

    _header(ws, 1, _GROUP_COLUMNS)
    _widths(ws, (c[1] for c in _GROUP_COLUMNS))
    wrapped = {i for i, c in enumerate(_GROUP_COLUMNS, 1) if c[2]}
    for r, line in enumerate(lines, 2):
        texts: list[Any] = [line.ward.id, line.ward.name, line.ward.former_district,
                            line.priority, line.item, line.description]
        for col, text in enumerate(texts, 1):
            _set(ws, r, col, text, wrap=col in wrapped)
        _set(ws, r, 7, line.quantity)
        if line.unit_price_vnd is None:
            _set(ws, r, 8, NEEDS_QUOTE)
            ws.cell(row=r, column=8).font = Font(italic=True)
            _set(ws, r, 9, None, money=True)
        else:
            _set(ws, r, 8, line.unit_price_vnd, money=True)
            _set(ws, r, 9, f"=G{r}*H{r}", money=True, formula=True)
        _set(ws, r, 10, line.stated_reason, wrap=True)
        _set(ws, r, 11, _when(line.measured_at, tz))
        _set(ws, r, 12, " ".join(line.flags), wrap=True)
        _fit_height(ws, r, {c: str(ws.cell(row=r, column=c).value or "") for c in wrapped},
                    _GROUP_COLUMNS)
    last = len(lines) + 1
    total = last + 1
    _set(ws, total, 8, "Total", bold=True)
    _set(ws, total, 9, f"=SUM(I2:I{last})", money=True, bold=True, formula=True)
    unpriced = sum(line.subtotal_vnd is None for line in lines)
    if unpriced:
        _set(ws, total, 10, f"{_plural(unpriced, 'line')} needing a quote, not in the total",
             wrap=True)
    ws.freeze_panes = "C2"  # header and ward stay in view while scrolling to the reason
    ws.auto_filter.ref = f"A1:L{last}"
    _print_setup(ws, 1, _group_label(lst, group))
    return f"I{total}"


def _write_summary(ws: Worksheet, lst: EquipmentList, titles: Mapping[str, str],
                   total_cells: Mapping[str, str], tz: tzinfo) -> None:
    from openpyxl.styles import Font

    _widths(ws, _SUMMARY_WIDTHS)
    _set(ws, 1, 1, TITLE)
    ws.cell(row=1, column=1).font = Font(bold=True, size=14)
    _set(ws, 2, 1, "Generated", bold=True)
    _set(ws, 2, 2, _when(lst.generated_at, tz))
    _set(ws, 3, 1, "Link figures", bold=True)
    _set(ws, 3, 2, criteria.windows_text(lst.windows))
    _set(ws, 4, 1, "City-wide total (VND)", bold=True)
    # B4 is filled once the city total row is known.
    _set(ws, 5, 1, "Lines needing a quote", bold=True)
    _set(ws, 5, 2, lst.unpriced_lines, left=True)
    row = 6
    for note in lst.notes:
        _set(ws, row, 1, "Note", bold=True)
        _set(ws, row, 2, note, wrap=True)
        row += 1

    row += 1
    _set(ws, row, 1, "Per working group", bold=True)
    row += 1
    _header(ws, row, _summary_columns("Working group", "Name", "Wards", "Lines",
                                      "Subtotal (VND)", "Lines needing a quote",
                                      "Wards without data"))
    silent = _no_data_wards(lst)
    first = row + 1
    for row, t in enumerate(lst.group_totals(), first):
        _set(ws, row, 1, t.working_group)
        _set(ws, row, 2, t.name, wrap=True)
        _set(ws, row, 3, t.wards)
        _set(ws, row, 4, t.lines)
        if t.working_group in total_cells:
            _set(ws, row, 5, "=" + _ref(titles[t.working_group], total_cells[t.working_group]),
                 money=True, formula=True)
        else:
            _set(ws, row, 5, 0, money=True)
        _set(ws, row, 6, t.unpriced_lines)
        _set(ws, row, 7, silent[t.working_group])
    last = max(row, first)  # no groups at all: an empty range still sums to 0
    row = last + 1
    _set(ws, row, 1, "City total", bold=True)
    for col, letter in ((3, "C"), (4, "D"), (5, "E"), (6, "F"), (7, "G")):
        _set(ws, row, col, f"=SUM({letter}{first}:{letter}{last})", bold=True, formula=True,
             money=col == 5)
    _set(ws, 4, 2, f"=E{row}", money=True, bold=True, formula=True, left=True)

    row += 2
    _set(ws, row, 1, "Per item", bold=True)
    header = row + 1
    _header(ws, header, _summary_columns("Item", "Description", "Quantity", "Unit price (VND)",
                                         "Subtotal (VND)", "Lines"))
    for row, item in enumerate(lst.item_totals(), header + 1):
        _set(ws, row, 1, item.item)
        _set(ws, row, 2, item.description, wrap=True)
        _set(ws, row, 3, item.quantity)
        price = _price_cells(item.unit_price_vnd, item.subtotal_vnd)[0]
        _set(ws, row, 4, price if item.unit_price_vnd is None else item.unit_price_vnd,
             money=True)
        _set(ws, row, 5, NEEDS_QUOTE if item.subtotal_vnd is None else item.subtotal_vnd,
             money=True)
        _set(ws, row, 6, item.lines)
    _print_setup(ws, None, SUMMARY_SHEET)


def _write_no_data(ws: Worksheet, lst: EquipmentList, tz: tzinfo) -> None:
    _header(ws, 1, _NO_DATA_COLUMNS)
    _widths(ws, (c[1] for c in _NO_DATA_COLUMNS))
    if not lst.no_data:
        _set(ws, 2, 1, "Every ward reported.")
    for r, entry in enumerate(lst.no_data, 2):
        values = (entry.ward.id, entry.ward.name, entry.ward.working_group,
                  entry.ward.former_district, entry.reason,
                  _when(entry.last_report_at, tz, never="never"))
        for col, value in enumerate(values, 1):
            _set(ws, r, col, value, wrap=_NO_DATA_COLUMNS[col - 1][2])
        _fit_height(ws, r, {2: entry.ward.name, 4: entry.ward.former_district, 5: entry.reason},
                    _NO_DATA_COLUMNS)
    ws.freeze_panes = "A2"
    _print_setup(ws, 1, NO_DATA_SHEET)


# --- Registry --------------------------------------------------------------------------------

class Format(NamedTuple):
    content_type: str
    extension: str
    render: Callable[[EquipmentList, tzinfo], str | bytes]
    """str is to be sent as UTF-8."""


FORMATS: Mapping[str, Format] = MappingProxyType({
    "csv": Format("text/csv; charset=utf-8", "csv", to_csv),
    "xlsx": Format("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", "xlsx",
                   to_xlsx),
    "markdown": Format("text/markdown; charset=utf-8", "md", to_markdown),
    "json": Format("application/json", "json", to_json),
})
"""Format name -> (content type, file extension, renderer)."""
