"""The equipment request list (`server.equipment`) as the documents people and scripts take
away: CSV and JSON for scripts, Markdown to read, and XLSX for the procurement officer of the
city's Department of Science and Technology, whose figures must add up when a line is edited
(subtotals and totals are formulas) and who prints it; PDF (`server.proposal`) for the
proposal that goes up for signature.

Everything people read is in the current language (`wardready.core.i18n`: render inside
`i18n.using(lang)`); CSV column keys, JSON keys and the values scripts filter on (section,
priority, flags, segment, item ids) stay English.

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

from wardready.core import i18n
from wardready.core.i18n import N_, _, ngettext
from wardready.server.equipment import PRIORITY_NAMES, EquipmentList, Line, NoData, windows_text

if TYPE_CHECKING:
    from openpyxl.worksheet.worksheet import Worksheet

    from wardready.server.config import ServerConfig

TITLE = N_("Equipment request list")
NEEDS_QUOTE = N_("needs a quote")
BOM = "\ufeff"
"""Starts the CSV file that is downloaded or written to --output: Excel then reads it as
UTF-8 (without it, as the system's ANSI code page, and Vietnamese names come out garbled)."""

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
    offset = f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
    if i18n.language() == "vi":  # 06/12/2026 14:05 +07:00, the day first as the city writes it
        return f"{i18n.format_date(dt.date())} {dt:%H:%M} {offset}"
    return f"{dt:%Y-%m-%d %H:%M} {offset}"


def _vnd(amount: int) -> str:
    """An amount in a cell whose heading names the currency (English), or as đồng are
    written (Vietnamese: 5.000.000 ₫)."""
    return i18n.format_vnd(amount) if i18n.language() == "vi" else f"{amount:,}"


def money_text(amount: int) -> str:
    """An amount in a sentence: 48,500,000 VND, or 48.500.000 ₫."""
    return i18n.format_vnd(amount) if i18n.language() == "vi" else f"{amount:,} VND"


def _priority(line: Line) -> str:
    return _(PRIORITY_NAMES[line.priority])


def lines_needing_a_quote(n: int) -> str:
    """"3 lines needing a quote", in the current language."""
    return ngettext("{count} line needing a quote", "{count} lines needing a quote",
                    n).format(count=n)


def _no_data_wards(lst: EquipmentList) -> Counter[str]:
    """Wards per working group the list cannot judge: a group with no lines may just be silent."""
    return Counter(g for g, _ in {(n.ward.working_group, n.ward.id) for n in lst.no_data})


def _line_record(line: Line, tz: tzinfo) -> dict[str, Any]:
    # The priority, the flags and the segment are values scripts filter on: English always.
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
    (section "no-data", `measured_at` = its last report). No totals: they are derivable.
    The header row is the English keys in every language (scripts read them, and a second,
    translated header row would be read as a line); the descriptions and reasons are in
    the current language."""
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

def to_csv_file(lst: EquipmentList, tz: tzinfo) -> str:
    """`to_csv` as a file for Excel: with the UTF-8 byte-order mark first."""
    return BOM + to_csv(lst, tz)


def to_json(lst: EquipmentList, tz: tzinfo) -> str:
    """Everything, for scripts: lines with subtotals, wards without data, item and group
    totals, the city-wide total. Times are ISO 8601 with the offset, in `tz`. Keys and
    enumerated values are English; descriptions, reasons and notes are in `language`."""
    doc = {
        "language": i18n.language(),
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
        return (_(NEEDS_QUOTE) if unit_price is None else _vnd(unit_price)), "—"
    # Same item at different prices: only the subtotal is meaningful.
    return (_("varies") if unit_price is None else _vnd(unit_price)), _vnd(subtotal)


def _headings(*texts: str) -> tuple[str, ...]:
    return tuple(_(t) for t in texts)


GROUP_TOTAL_HEADINGS = (N_("Working group"), N_("Name"), N_("Wards"), N_("Lines"),
                        N_("Subtotal (VND)"), N_("Lines needing a quote"),
                        N_("Wards without data"))
ITEM_TOTAL_HEADINGS = (N_("Item"), N_("Description"), N_("Quantity"), N_("Unit price (VND)"),
                       N_("Subtotal (VND)"))
MD_LINE_HEADINGS = (N_("Ward"), N_("Former district"), N_("Priority"), N_("Item"),
                    N_("Quantity"), N_("Unit price (VND)"), N_("Subtotal (VND)"), N_("Reason"),
                    N_("Measured at"))
MD_NO_DATA_HEADINGS = (N_("Ward"), N_("Working group"), N_("Reason"), N_("Last report"))


def to_markdown(lst: EquipmentList, tz: tzinfo) -> str:
    """A readable document: summary with totals per working group and per item, then each
    working group's lines, then the wards without data (GitHub-flavoured tables)."""
    out = [f"# {_(TITLE)}", "",
           _("Generated {when}. Link figures: {windows}.").format(
               when=_when(lst.generated_at, tz), windows=windows_text(lst.windows)), ""]
    for note in lst.notes:
        # A prefix, not a list item: a note cannot then start a heading or a list of its own.
        out += [_("Note: {note}").format(note=_md(note)), ""]

    out += ["## " + _(SUMMARY_SHEET), "",
            _("City-wide total: **{total}** for the priced lines. Lines needing a quote (not "
              "in the total): {unpriced}.").format(total=money_text(lst.total_vnd),
                                                   unpriced=lst.unpriced_lines), "",
            "### " + _("Per working group"), ""]
    silent = _no_data_wards(lst)
    out += _md_table(
        _headings(*GROUP_TOTAL_HEADINGS),
        ((t.working_group, t.name, str(t.wards), str(t.lines), _vnd(t.subtotal_vnd),
          str(t.unpriced_lines), str(silent[t.working_group])) for t in lst.group_totals()),
        numeric=(2, 3, 4, 5, 6))
    out += ["", "### " + _("Per item"), ""]
    out += _md_table(
        _headings(*ITEM_TOTAL_HEADINGS),
        ((t.item or "—", t.description, str(t.quantity),
          *_price_cells(t.unit_price_vnd, t.subtotal_vnd)) for t in lst.item_totals()),
        numeric=(2, 3, 4))

    for group, lines in lst.by_group().items():
        out += ["", f"## {_md(_group_label(lst, group))}", ""]
        out += _md_table(
            _headings(*MD_LINE_HEADINGS),
            ((f"{line.ward.name} ({line.ward.id})", line.ward.former_district, _priority(line),
              f"{line.description} ({line.item})" if line.item else line.description,
              str(line.quantity), *_price_cells(line.unit_price_vnd, line.subtotal_vnd),
              line.stated_reason, _when(line.measured_at, tz)) for line in lines),
            numeric=(4, 5, 6))
        unpriced = sum(line.subtotal_vnd is None for line in lines)
        priced = sum(line.subtotal_vnd or 0 for line in lines)
        if unpriced:
            subtotal = _("Subtotal for {group}: **{total}**; {lines}, not included.").format(
                group=_md(group), total=money_text(priced),
                lines=lines_needing_a_quote(unpriced))
        else:
            subtotal = _("Subtotal for {group}: **{total}**.").format(
                group=_md(group), total=money_text(priced))
        out += ["", subtotal]

    out += ["", "## " + _(NO_DATA_SHEET), ""]
    if not lst.no_data:
        out.append(_("Every ward reported: the list above covers the whole city."))
    else:
        out += [_("Nothing is known about these wards, which is not the same as needing "
                  "nothing."), ""]
        out += _md_table(
            _headings(*MD_NO_DATA_HEADINGS),
            (((f"{e.ward.name} ({e.ward.id})"), _group_label(lst, e.ward.working_group),
              e.reason, _when(e.last_report_at, tz, never=_("never"))) for e in lst.no_data))
    return "\n".join(out) + "\n"


# --- XLSX ------------------------------------------------------------------------------------

SUMMARY_SHEET = N_("Summary")
NO_DATA_SHEET = N_("No data")
MONEY = "#,##0"
MONEY_VI = '#,##0 "₫"'
"""Amounts stay numbers (the formulas add them); Vietnamese shows the đồng sign, and Excel
shows the separators of the reader's locale (5.000.000 ₫ in vi-VN)."""

# Group sheet: (header, width, wrapped). Quantity in G and unit price in H make the
# subtotal `=Gn*Hn`; keep them there or change _GROUP_SUBTOTAL's formula with them.
_GROUP_COLUMNS: tuple[tuple[str, float, bool], ...] = (
    (N_("Ward"), 12, False), (N_("Ward name"), 20, True), (N_("Former district"), 14, True),
    (N_("Priority"), 10, True), (N_("Item"), 14, True), (N_("Description"), 26, True),
    (N_("Quantity"), 9, True), (N_("Unit price (VND)"), 14, True),
    (N_("Subtotal (VND)"), 15, True), (N_("Reason"), 48, True), (N_("Measured at"), 19, False),
    (N_("Flags"), 14, True))
_NO_DATA_COLUMNS: tuple[tuple[str, float, bool], ...] = (
    (N_("Ward"), 14, False), (N_("Ward name"), 24, True), (N_("Working group"), 14, False),
    (N_("Former district"), 18, True), (N_("Reason"), 60, True), (N_("Last report"), 20, False))
_SUMMARY_WIDTHS = (22, 40, 12, 12, 18, 20, 18)


def _summary_columns(*headers: str) -> tuple[tuple[str, float, bool], ...]:
    return tuple((h, w, True) for h, w in zip(headers, _SUMMARY_WIDTHS, strict=False))


def _sheet_titles(groups: Iterable[str]) -> dict[str, str]:
    """Group id -> a sheet title Excel accepts (31 characters, none of []:*?/\\), unique
    without regard to case, and never one of the fixed sheets."""
    taken = {_(SUMMARY_SHEET).casefold(), _(NO_DATA_SHEET).casefold()}
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
    has lines (named by its id), and a No data sheet (Tổng hợp and Chưa có dữ liệu in
    Vietnamese). Subtotals and totals are formulas, so editing a quantity or a price keeps
    every figure consistent; pages print A4 landscape."""
    from openpyxl import Workbook  # the agent imports this module's package, not openpyxl

    wb = Workbook()
    wb.properties.title = _(TITLE)
    wb.properties.creator = "wardready"
    wb.properties.language = i18n.language()
    summary = wb.active
    assert summary is not None
    summary.title = _(SUMMARY_SHEET)

    titles = _sheet_titles(lst.by_group())
    group_total_cells = {}
    for group, lines in lst.by_group().items():
        ws = wb.create_sheet(titles[group])
        group_total_cells[group] = _write_group_sheet(ws, lst, group, lines, tz)
    _write_summary(summary, lst, titles, group_total_cells, tz)
    _write_no_data(wb.create_sheet(_(NO_DATA_SHEET)), lst, tz)

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
        cell.number_format = MONEY_VI if i18n.language() == "vi" else MONEY
    if bold:
        cell.font = Font(bold=True)
    cell.alignment = Alignment(wrap_text=wrap, vertical="top",
                               horizontal="left" if left else None)


def _header(ws: Worksheet, row: int, columns: Sequence[tuple[str, float, bool]]) -> None:
    from openpyxl.styles import PatternFill

    for col, (text, _width, _wrap) in enumerate(columns, 1):
        _set(ws, row, col, _(text), bold=True, wrap=True)
        ws.cell(row=row, column=col).fill = PatternFill("solid", fgColor="DDDDDD")
    _fit_height(ws, row, {col: _(c[0]) for col, c in enumerate(columns, 1)}, columns)


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
    for part, text in ((ws.oddHeader, f"{_(TITLE)}: {title}".replace("&", "&&")),
                       # &P and &N are Excel's codes for the page and the page count.
                       (ws.oddFooter, _("Page &P of &N"))):
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
                            _priority(line), line.item, line.description]
        for col, text in enumerate(texts, 1):
            _set(ws, r, col, text, wrap=col in wrapped)
        _set(ws, r, 7, line.quantity)
        if line.unit_price_vnd is None:
            _set(ws, r, 8, _(NEEDS_QUOTE))
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
    _set(ws, total, 8, _("Total"), bold=True)
    _set(ws, total, 9, f"=SUM(I2:I{last})", money=True, bold=True, formula=True)
    unpriced = sum(line.subtotal_vnd is None for line in lines)
    if unpriced:
        _set(ws, total, 10, _("{lines}, not in the total").format(
            lines=lines_needing_a_quote(unpriced)), wrap=True)
    ws.freeze_panes = "C2"  # header and ward stay in view while scrolling to the reason
    ws.auto_filter.ref = f"A1:L{last}"
    _print_setup(ws, 1, _group_label(lst, group))
    return f"I{total}"


def _write_summary(ws: Worksheet, lst: EquipmentList, titles: Mapping[str, str],
                   total_cells: Mapping[str, str], tz: tzinfo) -> None:
    from openpyxl.styles import Font

    _widths(ws, _SUMMARY_WIDTHS)
    _set(ws, 1, 1, _(TITLE))
    ws.cell(row=1, column=1).font = Font(bold=True, size=14)
    _set(ws, 2, 1, _("Generated"), bold=True)
    _set(ws, 2, 2, _when(lst.generated_at, tz))
    _set(ws, 3, 1, _("Link figures"), bold=True)
    _set(ws, 3, 2, windows_text(lst.windows))
    _set(ws, 4, 1, _("City-wide total (VND)"), bold=True)
    # B4 is filled once the city total row is known.
    _set(ws, 5, 1, _("Lines needing a quote"), bold=True)
    _set(ws, 5, 2, lst.unpriced_lines, left=True)
    row = 6
    for note in lst.notes:
        _set(ws, row, 1, _("Note"), bold=True)
        _set(ws, row, 2, note, wrap=True)
        row += 1

    row += 1
    _set(ws, row, 1, _("Per working group"), bold=True)
    row += 1
    _header(ws, row, _summary_columns(*GROUP_TOTAL_HEADINGS))
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
    _set(ws, row, 1, _("City total"), bold=True)
    for col, letter in ((3, "C"), (4, "D"), (5, "E"), (6, "F"), (7, "G")):
        _set(ws, row, col, f"=SUM({letter}{first}:{letter}{last})", bold=True, formula=True,
             money=col == 5)
    _set(ws, 4, 2, f"=E{row}", money=True, bold=True, formula=True, left=True)

    row += 2
    _set(ws, row, 1, _("Per item"), bold=True)
    header = row + 1
    _header(ws, header, _summary_columns(*ITEM_TOTAL_HEADINGS, N_("Lines")))
    for row, item in enumerate(lst.item_totals(), header + 1):
        _set(ws, row, 1, item.item)
        _set(ws, row, 2, item.description, wrap=True)
        _set(ws, row, 3, item.quantity)
        price = _price_cells(item.unit_price_vnd, item.subtotal_vnd)[0]
        _set(ws, row, 4, price if item.unit_price_vnd is None else item.unit_price_vnd,
             money=True)
        _set(ws, row, 5, _(NEEDS_QUOTE) if item.subtotal_vnd is None else item.subtotal_vnd,
             money=True)
        _set(ws, row, 6, item.lines)
    _print_setup(ws, None, _(SUMMARY_SHEET))


def _write_no_data(ws: Worksheet, lst: EquipmentList, tz: tzinfo) -> None:
    _header(ws, 1, _NO_DATA_COLUMNS)
    _widths(ws, (c[1] for c in _NO_DATA_COLUMNS))
    if not lst.no_data:
        _set(ws, 2, 1, _("Every ward reported."))
    for r, entry in enumerate(lst.no_data, 2):
        values = (entry.ward.id, entry.ward.name, entry.ward.working_group,
                  entry.ward.former_district, entry.reason,
                  _when(entry.last_report_at, tz, never=_("never")))
        for col, value in enumerate(values, 1):
            _set(ws, r, col, value, wrap=_NO_DATA_COLUMNS[col - 1][2])
        _fit_height(ws, r, {2: entry.ward.name, 4: entry.ward.former_district, 5: entry.reason},
                    _NO_DATA_COLUMNS)
    ws.freeze_panes = "A2"
    _print_setup(ws, 1, _(NO_DATA_SHEET))


# --- Registry --------------------------------------------------------------------------------

class Format(NamedTuple):
    content_type: str
    extension: str
    render: Callable[[EquipmentList, tzinfo], str | bytes]
    """str is to be sent as UTF-8."""


def _pdf(lst: EquipmentList, tz: tzinfo) -> bytes:
    from wardready.server.proposal import to_pdf

    return to_pdf(lst, tz)


FORMATS: Mapping[str, Format] = MappingProxyType({
    "csv": Format("text/csv; charset=utf-8", "csv", to_csv_file),
    "xlsx": Format("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", "xlsx",
                   to_xlsx),
    "markdown": Format("text/markdown; charset=utf-8", "md", to_markdown),
    "json": Format("application/json", "json", to_json),
    "pdf": Format("application/pdf", "pdf", _pdf),
})
"""Format name -> (content type, file extension, renderer). The CSV starts with a byte-order
mark (a file for Excel); the PDF uses the default issuer and fonts (`renderer` for the
server's)."""


def renderer(name: str, config: ServerConfig | None = None
             ) -> Callable[[EquipmentList, tzinfo], str | bytes]:
    """The renderer of format `name`, with the server config's proposal settings for PDF."""
    if name == "pdf" and config is not None:
        from wardready.server.proposal import to_pdf

        proposal = config.proposal
        return lambda lst, tz: to_pdf(lst, tz, proposal)
    return FORMATS[name].render
