"""The equipment request list as its readers get it: the CSV parses back to the lines, the
XLSX's formulas add up to the same figures and print properly, the Markdown renders into
tables that evidence text cannot break, the JSON round-trips."""

from __future__ import annotations

import csv
import io
import json
import re
from collections import defaultdict
from dataclasses import asdict, replace
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser
from typing import Any

import pytest
from markdown_it import MarkdownIt
from openpyxl import Workbook, load_workbook

from wardready.server.equipment import EquipmentList, Line, NoData, WardRef
from wardready.server.equipment_formats import (
    CSV_COLUMNS,
    FORMATS,
    to_csv,
    to_json,
    to_markdown,
    to_xlsx,
)

HCMC = timezone(timedelta(hours=7))
T0 = 1_751_337_000.0  # 2025-07-01 09:30 +07:00

SAI_GON = WardRef("sai-gon", "Phường Sài Gòn", "wg-01", "Quận 1")
BEN_THANH = WardRef("ben-thanh", "Phường Bến Thành", "wg-01", "Quận 1")
AN_KHANH = WardRef("an-khanh", "Phường An Khánh", "wg-02", "Thành phố Thủ Đức")
BINH_TRUNG = WardRef("binh-trung", "Phường Bình Trưng", "wg-02", "Thành phố Thủ Đức")
CAT_LAI = WardRef("cat-lai", "Phường Cát Lái", "wg-03", "Thành phố Thủ Đức")

# Everything a cell must survive: a pipe, a comma, quotes, a newline.
LINK_REASON = ('download 18.2 Mbit/s | required >= 50 Mbit/s, upload 4.1 Mbit/s "ADSL"\n'
               "over 212 tests")


def line(ward: WardRef, item: str, description: str, quantity: int, price: int | None,
         reason: str, priority: Any = "medium", flags: tuple[str, ...] = (),
         measured_at: float | None = T0 - 600) -> Line:
    return Line(ward, item, description, quantity, price, reason, measured_at, priority, flags)


LIST = EquipmentList(
    generated_at=T0,
    working_groups={"wg-01": "Tổ công tác số 1 (Sài Gòn)", "wg-02": "Tổ công tác số 2",
                    "wg-03": "Tổ công tác số 3"},
    lines=(
        line(SAI_GON, "link-upgrade", "Internet link upgrade", 1, None, LINK_REASON, "high",
             ("download", "upload", "video")),
        line(SAI_GON, "webcam-1080p", "USB webcam 1080p", 2, 1_500_000,
             "conference-pc, meeting-pc: no camera (0 of 1)", flags=("webcam",)),
        line(BEN_THANH, "ups-1000va", "UPS 1000 VA", 1, 2_300_000,
             "=0 UPS where the profile asks 1", flags=("ups",), measured_at=None),
        line(AN_KHANH, "pc-office", "Office PC, 4 cores, 8 GiB", 3, 12_500_000,
             "3 PCs below 2 cores / 4 GiB: *pc-1*, <b>pc-2</b> & pc-3 \\ old", "high", ("pc",)),
        line(AN_KHANH, "webcam-1080p", "USB webcam 1080p", 1, 1_500_000,
             "meeting-pc: no camera", flags=("webcam",)),
        line(AN_KHANH, "printer-a4", "A4 laser printer", 1, 4_200_000, "no printer", "low",
             ("printer",)),
    ),
    no_data=(NoData(BINH_TRUNG, "no PC has reported in the last 24 h", T0 - 3 * 86400),
             NoData(CAT_LAI, "no PC enrolled", None)),
    windows={"download": 24 * 3600, "upload": 24 * 3600, "rtt": 6 * 3600, "jitter": 6 * 3600,
             "loss": 6 * 3600},
    notes=("Prices from the 2025 catalogue | VAT included",),
)


def by_group(rows: list[dict[str, str]]) -> dict[str, list[dict[str, str]]]:
    grouped: dict[str, list[dict[str, str]]] = defaultdict(list)
    for row in rows:
        grouped[row["working_group"]].append(row)
    return grouped


def number(text: str) -> int | None:
    return None if text == "" else int(text)


def csv_rows(lst: EquipmentList = LIST) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(to_csv(lst, HCMC), newline="")))


def requests(lst: EquipmentList = LIST) -> list[dict[str, str]]:
    return [row for row in csv_rows(lst) if row["section"] == "request"]


def group_subtotal(rows: list[dict[str, str]]) -> int:
    return sum(number(row["subtotal_vnd"]) or 0 for row in rows)


# --- CSV -------------------------------------------------------------------------------------

def test_csv_parses_back_to_exactly_the_lines() -> None:
    rows = csv_rows()
    assert list(rows[0]) == list(CSV_COLUMNS)
    assert [row["section"] for row in rows] == ["request"] * 6 + ["no-data"] * 2
    for row, expected in zip(rows, LIST.lines, strict=False):
        assert (row["working_group"], row["ward"], row["ward_name"], row["former_district"]) \
            == (expected.ward.working_group, expected.ward.id, expected.ward.name,
                expected.ward.former_district)
        assert (row["priority"], row["item"], row["description"]) \
            == (expected.priority, expected.item, expected.description)
        assert int(row["quantity"]) == expected.quantity
        assert number(row["unit_price_vnd"]) == expected.unit_price_vnd
        assert number(row["subtotal_vnd"]) == expected.subtotal_vnd
        assert row["reason"] == expected.reason
        assert row["flags"].split() == list(expected.flags)
        if expected.measured_at is None:
            assert row["measured_at"] == ""
        else:
            assert row["measured_at"].endswith("+07:00")
            assert datetime.fromisoformat(row["measured_at"]).timestamp() == expected.measured_at
    assert group_subtotal(rows) == LIST.total_vnd == 3_000_000 + 2_300_000 + 37_500_000 \
        + 1_500_000 + 4_200_000
    assert sum(row["subtotal_vnd"] == "" for row in rows[:6]) == LIST.unpriced_lines == 1


def test_csv_lists_the_wards_without_data() -> None:
    no_data = [row for row in csv_rows() if row["section"] == "no-data"]
    assert [(r["ward"], r["ward_name"], r["working_group"]) for r in no_data] \
        == [("binh-trung", "Phường Bình Trưng", "wg-02"), ("cat-lai", "Phường Cát Lái", "wg-03")]
    assert no_data[0]["reason"] == "no PC has reported in the last 24 h"
    assert datetime.fromisoformat(no_data[0]["measured_at"]).timestamp() == T0 - 3 * 86400
    assert no_data[1]["measured_at"] == ""
    assert all(r["quantity"] == r["subtotal_vnd"] == r["item"] == "" for r in no_data)


# --- XLSX ------------------------------------------------------------------------------------

CELL = r"\$?([A-Z]+)\$?(\d+)"


def evaluate(wb: Workbook, sheet: str, coord: str) -> int | str | None:
    """The cell's value as Excel would show it, for the formula shapes the writer emits."""
    cell = wb[sheet][coord]
    if cell.data_type != "f":
        assert cell.value is None or isinstance(cell.value, int | str), (sheet, coord, cell.value)
        return cell.value
    formula = str(cell.value)[1:]
    if m := re.fullmatch(rf"SUM\({CELL}:{CELL}\)", formula):
        col1, row1, col2, row2 = m.groups()
        assert col1 == col2, formula
        # SUM skips empty and text cells, as Excel's does.
        values = [evaluate(wb, sheet, f"{col1}{r}") for r in range(int(row1), int(row2) + 1)]
        return sum(v for v in values if isinstance(v, int))
    if m := re.fullmatch(rf"{CELL}\*{CELL}", formula):
        a = evaluate(wb, sheet, "".join(m.groups()[:2]))
        b = evaluate(wb, sheet, "".join(m.groups()[2:]))
        assert isinstance(a, int) and isinstance(b, int), (sheet, coord, formula, a, b)
        return a * b
    if m := re.fullmatch(rf"'((?:[^']|'')+)'!{CELL}", formula):
        name, col, row = m.groups()
        return evaluate(wb, name.replace("''", "'"), f"{col}{row}")
    if m := re.fullmatch(CELL, formula):
        return evaluate(wb, sheet, "".join(m.groups()))
    raise AssertionError(f"{sheet}!{coord}: formula shape not expected: ={formula}")


def workbook(lst: EquipmentList = LIST) -> Workbook:
    return load_workbook(io.BytesIO(to_xlsx(lst, HCMC)))


def columns(wb: Workbook, sheet: str, row: int = 1) -> dict[str, str]:
    """Header text -> column letter."""
    return {str(c.value): c.column_letter for c in wb[sheet][row] if c.value is not None}


def find_row(wb: Workbook, sheet: str, col: str, text: str) -> int:
    ws = wb[sheet]
    return next(r for r in range(1, ws.max_row + 1) if ws[f"{col}{r}"].value == text)


def test_xlsx_sheets_are_summary_each_group_with_lines_and_no_data() -> None:
    assert workbook().sheetnames == ["Summary", "wg-01", "wg-02", "No data"]


def test_xlsx_group_sheets_formulas_give_the_csv_figures() -> None:
    wb = workbook()
    for group, rows in by_group(requests()).items():
        ws, col = wb[group], columns(wb, group)
        assert list(col) == ["Ward", "Ward name", "Former district", "Priority", "Item",
                             "Description", "Quantity", "Unit price (VND)", "Subtotal (VND)",
                             "Reason", "Measured at", "Flags"]
        for r, row in enumerate(rows, 2):
            assert ws[f"{col['Ward']}{r}"].value == row["ward"]
            assert ws[f"{col['Ward name']}{r}"].value == row["ward_name"]
            assert ws[f"{col['Quantity']}{r}"].value == int(row["quantity"])
            price = ws[f"{col['Unit price (VND)']}{r}"].value
            assert (price if isinstance(price, int) else None) == number(row["unit_price_vnd"])
            subtotal = ws[f"{col['Subtotal (VND)']}{r}"]
            if row["subtotal_vnd"] == "":
                assert subtotal.value is None and price == "needs a quote"
            else:
                assert subtotal.value == f"=G{r}*H{r}"
                assert evaluate(wb, group, subtotal.coordinate) == int(row["subtotal_vnd"])
                assert subtotal.number_format == "#,##0"
            # Evidence text stays text, even when it starts like a formula.
            reason = ws[f"{col['Reason']}{r}"]
            assert (reason.value, reason.data_type) == (row["reason"], "s")
            assert reason.alignment.wrap_text
        total_row = find_row(wb, group, col["Unit price (VND)"], "Total")
        assert total_row == len(rows) + 2
        total = ws[f"{col['Subtotal (VND)']}{total_row}"]
        assert total.value == f"=SUM(I2:I{len(rows) + 1})"
        assert evaluate(wb, group, total.coordinate) == group_subtotal(rows)
        assert all(c.font.b for c in ws[1])


def test_xlsx_summary_totals_are_formulas_over_the_group_sheets() -> None:
    wb, rows = workbook(), requests()
    grouped = by_group(rows)
    header = find_row(wb, "Summary", "A", "Working group")
    col = columns(wb, "Summary", header)
    city = find_row(wb, "Summary", "A", "City total")
    assert city == header + 4  # wg-01..03, wg-03 included with nothing to buy
    ws = wb["Summary"]
    for r in range(header + 1, city):
        group = ws[f"A{r}"].value
        assert isinstance(group, str)
        subtotal = ws[f"{col['Subtotal (VND)']}{r}"]
        if group in wb.sheetnames:
            assert re.fullmatch(rf"='{group}'!I\d+", str(subtotal.value))
        assert evaluate(wb, "Summary", subtotal.coordinate) == group_subtotal(grouped[group])
        assert ws[f"{col['Lines']}{r}"].value == len(grouped[group])
        assert ws[f"{col['Lines needing a quote']}{r}"].value \
            == sum(row["subtotal_vnd"] == "" for row in grouped[group])
        assert ws[f"{col['Wards without data']}{r}"].value == {"wg-01": 0, "wg-02": 1,
                                                               "wg-03": 1}[group]
    city_total = ws[f"{col['Subtotal (VND)']}{city}"]
    assert city_total.value == f"=SUM(E{header + 1}:E{city - 1})"
    assert evaluate(wb, "Summary", city_total.coordinate) == group_subtotal(rows)
    top = find_row(wb, "Summary", "A", "City-wide total (VND)")
    assert evaluate(wb, "Summary", f"B{top}") == group_subtotal(rows) == LIST.total_vnd
    assert evaluate(wb, "Summary", f"{col['Lines']}{city}") == len(rows)


def test_xlsx_per_item_totals_agree_with_the_csv() -> None:
    wb, ws = workbook(), workbook()["Summary"]
    expected: dict[tuple[str, str], list[int | None]] = {}
    for row in requests():
        qty, sub = expected.setdefault((row["item"], row["description"]), [0, 0])
        subtotal = number(row["subtotal_vnd"])
        expected[(row["item"], row["description"])] = [
            (qty or 0) + int(row["quantity"]),
            None if sub is None or subtotal is None else sub + subtotal]
    header = find_row(wb, "Summary", "A", "Item")
    col = columns(wb, "Summary", header)
    got = {}
    for r in range(header + 1, ws.max_row + 1):
        value = evaluate(wb, "Summary", f"{col['Subtotal (VND)']}{r}")
        got[(ws[f"A{r}"].value, ws[f"{col['Description']}{r}"].value)] = [
            ws[f"{col['Quantity']}{r}"].value, None if value == "needs a quote" else value]
    assert got == expected
    assert got[("webcam-1080p", "USB webcam 1080p")] == [3, 4_500_000]


def test_xlsx_prints_a4_landscape_one_page_wide_with_the_header_repeated() -> None:
    wb = workbook()
    for name in wb.sheetnames:
        ws = wb[name]
        assert ws.page_setup.orientation == "landscape", name
        assert int(ws.page_setup.paperSize or 0) == int(ws.PAPERSIZE_A4), name
        assert ws.page_setup.fitToWidth == 1, name
        assert ws.page_setup.fitToHeight == 0, name
        assert ws.sheet_properties.pageSetUpPr is not None
        assert ws.sheet_properties.pageSetUpPr.fitToPage, name
    for name in ("wg-01", "wg-02", "No data"):
        ws = wb[name]
        assert ws.print_title_rows in ("1:1", "$1:$1"), name
        assert ws.freeze_panes in ("A2", "C2"), name
        assert all(c.font.b for c in ws[1]), name
    # The multi-line reason gets a row tall enough to print it whole.
    height = wb["wg-01"].row_dimensions[2].height
    assert height is not None and height >= 30


def test_xlsx_no_data_sheet() -> None:
    ws = workbook()["No data"]
    assert [c.value for c in ws[1]] == ["Ward", "Ward name", "Working group", "Former district",
                                        "Reason", "Last report"]
    assert [c.value for c in ws[2]] == ["binh-trung", "Phường Bình Trưng", "wg-02",
                                        "Thành phố Thủ Đức", "no PC has reported in the last 24 h",
                                        "2025-06-28 09:30 +07:00"]
    assert ws["F3"].value == "never"
    everyone = workbook(replace(LIST, no_data=()))["No data"]
    assert everyone["A2"].value == "Every ward reported."


def test_xlsx_awkward_group_ids_still_make_valid_sheets_and_references() -> None:
    ward = WardRef("w", "Phường X", "o'neil/2025: a working group id far too long", "Quận 3")
    clash = WardRef("v", "Phường Y", "summary", "Quận 3")
    lst = EquipmentList(T0, {ward.working_group: "odd", clash.working_group: "clash"},
                        (line(ward, "ups", "UPS", 2, 100, "none"),
                         line(clash, "ups", "UPS", 1, 100, "none")),
                        (), LIST.windows)
    wb = workbook(lst)
    assert len(wb.sheetnames) == 4 and len({n.casefold() for n in wb.sheetnames}) == 4
    assert all(len(n) <= 31 and not set(n) & set("[]:*?/\\") for n in wb.sheetnames)
    city = find_row(wb, "Summary", "A", "City total")
    assert evaluate(wb, "Summary", f"E{city - 2}") == 200
    assert evaluate(wb, "Summary", f"E{city - 1}") == 100
    assert evaluate(wb, "Summary", f"E{city}") == 300


# --- Markdown --------------------------------------------------------------------------------

class Tables(HTMLParser):
    """The rendered document as a reader sees it: headings, and tables of cell texts."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.headings: list[tuple[str, str]] = []
        self.tables: list[tuple[str, list[str], list[list[str]]]] = []
        self.text: list[str] | None = None
        self.row: list[str] | None = None
        self.section = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("h1", "h2", "h3", "td", "th"):
            self.text = []
        elif tag == "table":
            self.tables.append((self.section, [], []))
        elif tag == "tr":
            self.row = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("h1", "h2", "h3") and self.text is not None:
            self.headings.append((tag, "".join(self.text)))
            if tag == "h2":
                self.section = "".join(self.text)
            self.text = None
        elif tag in ("td", "th") and self.text is not None and self.row is not None:
            self.row.append("".join(self.text))
            self.text = None
        elif tag == "tr" and self.row is not None:
            _, header, rows = self.tables[-1]
            if header:
                rows.append(self.row)
            else:
                header.extend(self.row)
            self.row = None

    def handle_data(self, data: str) -> None:
        if self.text is not None:
            self.text.append(data)


def rendered(lst: EquipmentList = LIST) -> tuple[Tables, str]:
    html = MarkdownIt("commonmark").enable("table").render(to_markdown(lst, HCMC))
    doc = Tables()
    doc.feed(html)
    return doc, html


def test_markdown_renders_a_table_per_group_with_a_row_per_line() -> None:
    doc, html = rendered()
    assert ("h1", "Equipment request list") in doc.headings
    assert [h for tag, h in doc.headings if tag == "h2"] == [
        "Summary", "wg-01 — Tổ công tác số 1 (Sài Gòn)", "wg-02 — Tổ công tác số 2", "No data"]
    assert "<b>" not in html  # evidence text is text, not markup
    sections = {section: (header, rows) for section, header, rows in doc.tables}
    for group, lines in LIST.by_group().items():
        header, rows = sections[f"{group} — {LIST.working_groups[group]}"]
        assert header == ["Ward", "Former district", "Priority", "Item", "Quantity",
                          "Unit price (VND)", "Subtotal (VND)", "Reason", "Measured at"]
        assert len(rows) == len(lines)
        for row, expected in zip(rows, lines, strict=True):
            # Nothing in the reason split, dropped or added a cell.
            assert len(row) == len(header)
            assert row[0] == f"{expected.ward.name} ({expected.ward.id})"
            assert row[7] == " ".join(expected.reason.splitlines())
            assert row[4] == str(expected.quantity)
            assert row[6] == ("—" if expected.subtotal_vnd is None
                              else f"{expected.subtotal_vnd:,}")
    reason = sections["wg-01 — Tổ công tác số 1 (Sài Gòn)"][1][0][7]
    assert "| required >= 50 Mbit/s, upload 4.1 Mbit/s \"ADSL\" over 212 tests" in reason


def test_markdown_summary_shows_the_totals() -> None:
    doc, html = rendered()
    assert "Generated 2025-07-01 09:30 +07:00" in html
    assert ("Link figures: download and upload over the last 24 h; round-trip time, jitter and "
            "packet loss over the last 6 h") in html
    assert "Prices from the 2025 catalogue | VAT included" in html
    assert "City-wide total: <strong>48,500,000 VND</strong>" in html
    assert "Lines needing a quote (not in the total): 1." in html
    tables = [(header, rows) for section, header, rows in doc.tables if section == "Summary"]
    (group_header, groups), (item_header, items) = tables
    assert group_header[:6] == ["Working group", "Name", "Wards", "Lines", "Subtotal (VND)",
                                "Lines needing a quote"]
    assert [(r[0], r[2], r[3], r[4], r[5]) for r in groups] == [
        ("wg-01", "2", "3", "5,300,000", "1"), ("wg-02", "1", "3", "43,200,000", "0"),
        ("wg-03", "0", "0", "0", "0")]
    assert item_header == ["Item", "Description", "Quantity", "Unit price (VND)",
                           "Subtotal (VND)"]
    assert ["webcam-1080p", "USB webcam 1080p", "3", "1,500,000", "4,500,000"] in items
    assert ["link-upgrade", "Internet link upgrade", "1", "needs a quote", "—"] in items
    assert all(len(r) == len(item_header) for r in items)


def test_markdown_no_data_section() -> None:
    doc, _ = rendered()
    (header, rows), = [(h, r) for section, h, r in doc.tables if section == "No data"]
    assert header == ["Ward", "Working group", "Reason", "Last report"]
    assert rows == [
        ["Phường Bình Trưng (binh-trung)", "wg-02 — Tổ công tác số 2",
         "no PC has reported in the last 24 h", "2025-06-28 09:30 +07:00"],
        ["Phường Cát Lái (cat-lai)", "wg-03 — Tổ công tác số 3", "no PC enrolled", "never"]]
    doc, html = rendered(replace(LIST, no_data=()))
    assert "Every ward reported" in html
    assert not [t for t in doc.tables if t[0] == "No data"]


# --- JSON and the registry -------------------------------------------------------------------

def test_json_round_trips() -> None:
    doc = json.loads(to_json(LIST, HCMC))
    assert [(x["ward"], x["ward_name"], x["item"], x["quantity"], x["unit_price_vnd"],
             x["subtotal_vnd"], x["reason"], tuple(x["flags"])) for x in doc["lines"]] \
        == [(x.ward.id, x.ward.name, x.item, x.quantity, x.unit_price_vnd, x.subtotal_vnd,
             x.reason, x.flags) for x in LIST.lines]
    assert [x["ward"] for x in doc["no_data"]] == ["binh-trung", "cat-lai"]
    assert doc["no_data"][1]["last_report_at"] is None
    assert doc["item_totals"] == [asdict(t) for t in LIST.item_totals()]
    assert doc["group_totals"] == [asdict(t) for t in LIST.group_totals()]
    assert (doc["total_vnd"], doc["unpriced_lines"]) == (LIST.total_vnd, LIST.unpriced_lines)
    assert doc["generated_at"] == "2025-07-01T09:30:00+07:00"
    assert doc["working_groups"][0] == {"id": "wg-01", "name": "Tổ công tác số 1 (Sài Gòn)"}


@pytest.mark.parametrize("name", ["csv", "xlsx", "markdown", "json"])
def test_formats_registry(name: str) -> None:
    content_type, extension, render = FORMATS[name]
    out = render(LIST, HCMC)
    assert isinstance(out, bytes) == (name == "xlsx")
    assert extension == {"markdown": "md"}.get(name, name)
    assert content_type.split(";")[0] in ("text/csv", "application/json", "text/markdown",
                                          "application/vnd.openxmlformats-officedocument"
                                          ".spreadsheetml.sheet")


def test_empty_list_renders_everywhere() -> None:
    empty = EquipmentList(T0, {"wg-01": "one"}, (), (), LIST.windows)
    for fmt in FORMATS.values():
        assert fmt.render(empty, HCMC)
    wb = workbook(empty)
    assert wb.sheetnames == ["Summary", "No data"]
    city = find_row(wb, "Summary", "A", "City total")
    assert evaluate(wb, "Summary", f"E{city}") == 0
