"""The equipment request list and the server's commands in Vietnamese: a city of units with
Vietnamese names built and rendered in `vi` (Markdown, CSV with its byte-order mark, JSON,
XLSX whose formulas still add up to the catalogue's prices, the PDF proposal read back with
pdftotext and rendered with pdftoppm), the language chosen by `--lang`, the config or
`?lang=`, and no English sentence of the list left."""

from __future__ import annotations

import contextvars
import csv
import io
import json
import re
import subprocess
import time
from collections import Counter, defaultdict
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml
from openpyxl import load_workbook

from lab import city
from tests.conftest import DATA, require_binary
from tests.test_equipment_formats import LIST, evaluate
from tests.test_equipment_list import expected_lines
from tests.test_server import Client, MakeClient, auth
from wardready.core import i18n
from wardready.core.inventory import Inventory, Profile, load_inventory
from wardready.model.report import Report
from wardready.server import cli, equipment
from wardready.server.app import create_app
from wardready.server.config import ProposalConfig, ServerConfig
from wardready.server.context import Fleet
from wardready.server.equipment import EquipmentList
from wardready.server.equipment_formats import (
    CSV_COLUMNS,
    FORMATS,
    to_csv,
    to_json,
    to_markdown,
    to_xlsx,
)
from wardready.server.proposal import ProposalError, to_pdf
from wardready.server.store import Store

HCMC = timezone(timedelta(hours=7))
DAY = 86400.0
ARTEFACTS = Path(__file__).resolve().parent / "artefacts"
SAI_GON = "Phường Sài Gòn"
"""The name the first ward with lines is given, diacritics and all."""

# What people read of the English list: none of it may be left in the Vietnamese one.
ENGLISH_HEADINGS = ("Equipment request list", "Summary", "Per working group", "Per item",
                    "No data", "Working group", "Ward", "Former district", "Priority", "Item",
                    "Quantity", "Unit price (VND)", "Subtotal (VND)", "Reason", "Measured at",
                    "Last report", "Description", "Lines needing a quote",
                    "Wards without data")
# (The criterion names, figures, fixes and segment findings the reasons quote are the
# model's, translated with it: the phrases here are the list's own.)
ENGLISH_PHRASES = ("against", "needed", "percentile", "of the last",
                   "video meetings", "unreachable", "not measured", "PCs known",
                   "no agent has reported", "needs a quote", "City-wide total", "Subtotal for",
                   "Generated", "Link figures", "so the ward's", "ward LAN:", "uplink:",
                   " seen", "unknown:", "Every ward reported", " VND", "ward router:",
                   "the PC:", "is out of support", "connected port")


def vietnamese_city(tmp_path: Path) -> tuple[Inventory, dict[str, city.Shortfall]]:
    """The generated city of 168 units (lab/city.py), renamed as the city names them:
    `Phường ...`, `Xã ...`, working groups `Tổ công tác số N`."""
    doc = yaml.safe_load(city.inventory_yaml())
    path = tmp_path / "inventory.yml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    plan = city.plan(load_inventory(path))
    first = next(w for w, kind in plan.items() if expected_lines(kind, _profile(path, w)))
    for n, group in enumerate(doc["working_groups"], 1):
        group["name"] = f"Tổ công tác số {n}"
    for i, ward in enumerate(doc["wards"], 1):
        ward["name"] = (SAI_GON if ward["id"] == first else
                        f"{'Xã' if ward['kind'] == 'commune' else 'Phường'} Thử Nghiệm Số {i}")
        ward["former_district"] = f"Quận cũ {i % 7 + 1}"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    inventory = load_inventory(path)
    assert city.plan(inventory) == plan
    return inventory, plan


def _profile(path: Path, ward: str) -> Profile:
    inventory = load_inventory(path)
    return inventory.profile_of(next(w for w in inventory.wards if w.id == ward))


def build(inventory: Inventory, plan: dict[str, city.Shortfall], lang: i18n.Language
          ) -> EquipmentList:
    """The list as the server builds it from its own view of the agents' reports, in
    `lang` (the reasons are written as it is built)."""
    fleet, points = Fleet({}, set(), DAY), defaultdict(list)
    now = time.time()
    for ward, kind in plan.items():
        for pc, role in city.pcs(kind):
            report = Report.model_validate(city.report(ward, pc, role, kind))
            change = fleet.ward_link_change(report, now)
            for criterion, value in change.items():
                points[ward, criterion].append((now, value))
            fleet.apply(report, now, change)
    with i18n.using(lang):
        return equipment.build(inventory, equipment.Evidence(fleet.agents, fleet.active,
                                                             points), now + 60, DAY)


class City:
    def __init__(self, tmp: Path) -> None:
        self.inventory, self.plan = vietnamese_city(tmp)
        self.vi = build(self.inventory, self.plan, "vi")
        self.en = build(self.inventory, self.plan, "en")
        prices = {c.id: c.unit_price_vnd for c in self.inventory.catalogue}
        # The totals the documents must show, from the catalogue's prices and the quantities
        # each kind of shortfall calls for (tests/test_equipment_list.py), not from the list.
        self.group_totals: Counter[str] = Counter()
        self.unpriced = 0
        for ward in self.inventory.wards:
            for item, quantity, _ in expected_lines(self.plan[ward.id],
                                                    self.inventory.profile_of(ward)):
                price = prices[item]
                if price is None:
                    self.unpriced += 1
                self.group_totals[ward.working_group] += quantity * (price or 0)
        self.total = sum(self.group_totals.values())


@pytest.fixture(scope="module")
def hcmc(tmp_path_factory: pytest.TempPathFactory) -> City:
    return City(tmp_path_factory.mktemp("vi-city"))


def vnd(amount: int) -> str:
    """Đồng as Vietnamese writes them: dots between thousands, then the sign."""
    return f"{amount:,}".replace(",", ".") + " ₫"


def english_left(text: str) -> list[str]:
    return [p for p in ENGLISH_PHRASES if p in text]


# --- the list itself ------------------------------------------------------------------------

def test_the_list_is_the_same_in_both_languages_but_for_its_words(hcmc: City) -> None:
    assert [(x.ward.id, x.item, x.quantity, x.unit_price_vnd, x.flags, x.priority)
            for x in hcmc.vi.lines] == [(x.ward.id, x.item, x.quantity, x.unit_price_vnd,
                                         x.flags, x.priority) for x in hcmc.en.lines]
    assert hcmc.vi.total_vnd == hcmc.en.total_vnd == hcmc.total > 0
    catalogue = {c.id: c.description for c in hcmc.inventory.catalogue}
    for line in hcmc.vi.lines:
        description = catalogue[line.item]
        assert isinstance(description, dict), line.item
        assert line.description == description["vi"]
    assert {x.description for x in hcmc.en.lines} <= {
        d["en"] for d in catalogue.values() if isinstance(d, dict)}


def test_reasons_are_written_in_vietnamese(hcmc: City) -> None:
    with i18n.using("vi"):  # the segment a line fixes is named as it is shown
        reasons = {x.ward.id + "/" + x.item: x.stated_reason for x in hcmc.vi.lines}
    reasons.update({n.ward.id + "/no-data": n.reason for n in hcmc.vi.no_data})
    left = {k: english_left(r) for k, r in reasons.items() if english_left(r)}
    assert not left, left
    thin = next(x for x in hcmc.vi.lines if hcmc.plan[x.ward.id] == "thin-link")
    assert thin.reason == ("tải xuống 20,0 Mbit/s (bách phân vị thứ 25 trong 24 giờ qua), "
                           "yêu cầu 50,0 Mbit/s")
    switch = next(x for x in hcmc.vi.lines if x.item == "switch-24p-gbe")
    assert switch.reason == ("core-switch (DCS-7010T): 1 cổng đang kết nối có tốc độ dưới "
                             "1000 Mbit/s: Ethernet2 ở 100 Mbit/s")
    silent = next(n for n in hcmc.vi.no_data if hcmc.plan[n.ward.id] == "no-agent")
    assert silent.reason == "chưa có agent (phần mềm giám sát) nào của đơn vị này báo cáo"


# --- Markdown, CSV, JSON ---------------------------------------------------------------------

def test_markdown_in_vietnamese(hcmc: City) -> None:
    with i18n.using("vi"):
        text = to_markdown(hcmc.vi, HCMC)
    assert text.startswith("# Danh sách đề xuất trang bị\n")
    for heading in ("## Tổng hợp", "### Theo Tổ công tác", "### Theo hạng mục",
                    "## Chưa có dữ liệu", "| Tổ công tác | Tên | Số đơn vị | Số dòng |",
                    "| Đơn vị | Quận/huyện cũ | Mức ưu tiên | Hạng mục | Số lượng | Đơn giá |"):
        assert heading in text, heading
    assert f"Tổng cộng toàn Thành phố: **{vnd(hcmc.total)}**" in text
    for heading in ENGLISH_HEADINGS:
        assert f"| {heading} |" not in text and f"# {heading}\n" not in text, heading
    assert not english_left(text)
    assert SAI_GON in text and "| cao |" in text and "| trung bình |" in text
    # Dates the city's way: day/month/year.
    assert re.search(r"Lập lúc \d\d/\d\d/\d{4} \d\d:\d\d \+07:00\.", text)
    with i18n.using("en"):
        assert to_markdown(hcmc.en, HCMC).startswith("# Equipment request list\n")


def test_csv_for_excel_starts_with_the_byte_order_mark(hcmc: City) -> None:
    with i18n.using("vi"):
        body = FORMATS["csv"].render(hcmc.vi, HCMC)
    assert isinstance(body, str)
    data = body.encode("utf-8")
    assert data.startswith(b"\xef\xbb\xbf")
    rows = list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"), newline="")))
    # The keys stay English for the scripts that read them; the texts are Vietnamese.
    assert list(rows[0]) == list(CSV_COLUMNS)
    assert SAI_GON in {r["ward_name"] for r in rows}
    requests = [r for r in rows if r["section"] == "request"]
    assert sum(int(r["subtotal_vnd"] or 0) for r in requests) == hcmc.total
    assert {r["priority"] for r in requests} <= {"high", "medium", "low"}
    assert not english_left(" ".join(r["reason"] + r["description"] for r in rows))
    # The string renderer itself has no mark: the English tests read it as before.
    assert not to_csv(hcmc.vi, HCMC).startswith("\ufeff")


def test_json_keeps_english_keys_and_values_with_vietnamese_texts(hcmc: City) -> None:
    with i18n.using("vi"):
        doc = json.loads(to_json(hcmc.vi, HCMC))
    assert doc["language"] == "vi" and doc["total_vnd"] == hcmc.total
    line = doc["lines"][0]
    assert set(line) >= {"ward", "ward_name", "priority", "item", "description", "reason"}
    assert {x["priority"] for x in doc["lines"]} <= {"high", "medium", "low"}
    assert not english_left(" ".join(x["reason"] for x in doc["lines"]))


# --- XLSX ------------------------------------------------------------------------------------

def test_xlsx_in_vietnamese_adds_up_to_the_catalogue_prices(hcmc: City) -> None:
    with i18n.using("vi"):
        wb = load_workbook(io.BytesIO(to_xlsx(hcmc.vi, HCMC)))
    groups = list(hcmc.vi.by_group())
    assert wb.sheetnames == ["Tổng hợp", *groups, "Chưa có dữ liệu"]
    assert [c.value for c in wb["Chưa có dữ liệu"][1]] == [
        "Đơn vị", "Tên đơn vị", "Tổ công tác", "Quận/huyện cũ", "Lý do",
        "Báo cáo gần nhất"]
    for group in groups:
        ws = wb[group]
        header = [c.value for c in ws[1]]
        assert header == ["Đơn vị", "Tên đơn vị", "Quận/huyện cũ", "Mức ưu tiên",
                          "Hạng mục", "Mô tả", "Số lượng", "Đơn giá", "Thành tiền", "Lý do",
                          "Thời điểm đo", "Mã thiếu hụt"]
        total_row = next(r for r in range(2, ws.max_row + 1) if ws[f"H{r}"].value == "Tổng cộng")
        total = ws[f"I{total_row}"]
        assert total.value == f"=SUM(I2:I{total_row - 1})"
        assert evaluate(wb, group, total.coordinate) == hcmc.group_totals[group]
        assert total.number_format == '#,##0 "₫"'
        assert ws["H2"].value == "cần báo giá" or ws["H2"].number_format == '#,##0 "₫"'
        for r in range(2, total_row):
            assert ws[f"D{r}"].value in ("cao", "trung bình", "thấp")
            assert not english_left(str(ws[f"J{r}"].value))
    summary = wb["Tổng hợp"]
    assert summary["A1"].value == "Danh sách đề xuất trang bị"
    city_row = next(r for r in range(1, summary.max_row + 1)
                    if summary[f"A{r}"].value == "Tổng cộng toàn Thành phố")
    assert evaluate(wb, "Tổng hợp", f"E{city_row}") == hcmc.total
    top = next(r for r in range(1, 10)
               if summary[f"A{r}"].value == "Tổng cộng toàn Thành phố (₫)")
    assert evaluate(wb, "Tổng hợp", f"B{top}") == hcmc.total
    assert summary[f"B{top}"].number_format == '#,##0 "₫"'
    assert wb[groups[0]].oddFooter.center.text == "Trang &P/&N"


# --- the PDF proposal ------------------------------------------------------------------------

def pdf_text(data: bytes, tmp_path: Path, page: int | None = None) -> str:
    path = tmp_path / "proposal.pdf"
    path.write_bytes(data)
    pages = ["-f", str(page), "-l", str(page)] if page else []
    out = subprocess.run([require_binary("pdftotext"), "-layout", *pages, str(path), "-"],
                         capture_output=True, text=True, timeout=60, check=True)
    return out.stdout


def page_count(data: bytes) -> int:
    return len(re.findall(rb"/Type\s*/Page\b", data))


def test_the_pdf_proposal_in_vietnamese(hcmc: City, tmp_path: Path) -> None:
    with i18n.using("vi"):
        data = to_pdf(hcmc.vi, HCMC)
    assert data.startswith(b"%PDF-")
    text = pdf_text(data, tmp_path)
    flat = " ".join(text.split())
    day = datetime.fromtimestamp(hcmc.vi.generated_at, HCMC)
    for expected in ("ỦY BAN NHÂN DÂN", "THÀNH PHỐ HỒ CHÍ MINH", "SỞ KHOA HỌC VÀ CÔNG NGHỆ",
                     "CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM", "Độc lập - Tự do - Hạnh phúc",
                     f"Thành phố Hồ Chí Minh, ngày {day:%d} tháng {day:%m} năm {day:%Y}",
                     "ĐỀ XUẤT", "Về việc trang bị thiết bị phục vụ họp trực tuyến",
                     "NGƯỜI LẬP", "THỦ TRƯỞNG ĐƠN VỊ", "(Ký, ghi rõ họ tên)",
                     f"TỔNG CỘNG: {vnd(hcmc.total)}", SAI_GON):
        assert expected in flat, expected
    for group, total in hcmc.group_totals.items():
        if total:
            assert f"Cộng {hcmc.vi.working_groups[group]}: {vnd(total)}" in flat, group
    for ward in {x.ward.name for x in hcmc.vi.lines}:
        assert ward in flat, ward
    assert "GRAND TOTAL" not in flat and "PROPOSAL" not in flat and " VND" not in flat
    # Every page but the last (signatures) carries a table, and each its header row.
    pages = page_count(data)
    assert pages > 2
    for page in range(1, pages):
        assert re.search(r"STT\s+Hạng mục\s+SL\s+Đơn giá\s+Thành tiền\s+Lý do",
                         pdf_text(data, tmp_path, page)), page
    ARTEFACTS.mkdir(exist_ok=True)
    pdf = ARTEFACTS / "proposal-vi.pdf"
    pdf.write_bytes(data)
    subprocess.run([require_binary("pdftoppm"), "-png", "-r", "60", "-f", "1", "-l", "2",
                    str(pdf), str(ARTEFACTS / "proposal-vi")], check=True, timeout=60)
    print(f"\nthe proposal's first pages: {sorted(ARTEFACTS.glob('proposal-vi-*.png'))}")


def test_a_long_table_breaks_across_pages_with_its_header_repeated(tmp_path: Path) -> None:
    ward = LIST.lines[0].ward
    long = "đo được 18,2 Mbit/s; yêu cầu 50 Mbit/s. " * 6
    lines = tuple(replace(LIST.lines[1], ward=ward, reason=f"{i}: {long}", quantity=1)
                  for i in range(40))
    lst = replace(LIST, lines=lines, no_data=())
    with i18n.using("vi"):
        data = to_pdf(lst, HCMC)
    pages = page_count(data)
    assert pages >= 3
    for page in range(1, pages):
        assert "STT" in pdf_text(data, tmp_path, page), page
    flat = " ".join(pdf_text(data, tmp_path).split())
    assert f"Cộng {ward.name} {vnd(40 * 1_500_000)}" in flat
    assert "39: đo được 18,2 Mbit/s" in flat  # the last line, whole


def test_the_english_proposal_has_the_same_structure(tmp_path: Path) -> None:
    with i18n.using("en"):
        data = to_pdf(LIST, HCMC)
    flat = " ".join(pdf_text(data, tmp_path).split())
    for expected in ("HO CHI MINH CITY", "PEOPLE'S COMMITTEE", "SOCIALIST REPUBLIC OF VIET NAM",
                     "Independence - Freedom - Happiness", "Ho Chi Minh City, 1 July 2025",
                     "PROPOSAL", "PREPARED BY", "HEAD OF THE AGENCY",
                     "GRAND TOTAL: VND 48,500,000", "Phường Sài Gòn", "Phường An Khánh"):
        assert expected in flat, expected


def test_a_missing_font_is_one_clear_line(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.ttf"
    with pytest.raises(ProposalError) as err:
        to_pdf(LIST, HCMC, ProposalConfig(font_file=missing))
    assert str(err.value) == (f"PDF font {missing} not found: install fonts-dejavu-core or "
                              "set proposal.font_file in the server configuration")
    assert "\n" not in str(err.value)


# --- the server's commands -------------------------------------------------------------------

def run_cli(argv: list[str]) -> int:
    """`wardready-server` in a context of its own: its language does not outlive it."""
    return contextvars.copy_context().run(cli.main, argv)


@pytest.fixture
def server_yml(tmp_path: Path) -> Path:
    path = tmp_path / "server.yml"
    path.write_text(f"database: {tmp_path / 'w.db'}\ninventory: {DATA / 'inventory-small.yml'}\n")
    return path


def test_the_language_comes_from_the_flag_then_the_config(
        server_yml: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["--lang", "vi", "check-config", "--config", str(server_yml)]) == 0
    assert capsys.readouterr().out.endswith(
        ": 2 đơn vị, 2 Tổ công tác, 1 hồ sơ yêu cầu: hợp lệ\n")
    assert run_cli(["check-config", "--config", str(server_yml), "--lang", "vi"]) == 0
    assert "hợp lệ" in capsys.readouterr().out
    server_yml.write_text(server_yml.read_text() + "language: vi\n")
    assert run_cli(["check-config", "--config", str(server_yml)]) == 0
    assert "Tổ công tác" in capsys.readouterr().out
    assert run_cli(["--lang", "en", "check-config", "--config", str(server_yml)]) == 0
    assert capsys.readouterr().out.endswith(": 2 wards, 2 working groups, 1 profiles: ok\n")
    assert run_cli(["--lang", "fr", "check-config", "--config", str(server_yml)]) == 2
    # Said in the language the config asks for, as the rest of the run would be.
    assert capsys.readouterr().err == ("wardready-server: --lang: ngôn ngữ 'fr' không được "
                                       "hỗ trợ; chọn một trong en, vi\n")
    assert i18n.language() == "en"  # the runs above did not leave their language behind


def test_the_tables_in_vietnamese(server_yml: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with Store(Path(str(server_yml).replace("server.yml", "w.db"))) as store:
        store.issue_token("sai-gon", "room-pc")
    assert run_cli(["--lang", "vi", "tokens", "list", "--config", str(server_yml)]) == 0
    header, row = capsys.readouterr().out.splitlines()
    assert header.split() == ["ID", "VAI", "TRÒ", "ĐƠN", "VỊ", "MÁY", "/", "TÊN", "NGÀY",
                              "TẠO", "TRẠNG", "THÁI"]
    assert row.endswith("đang hiệu lực") and "sai-gon" in row
    assert run_cli(["--lang", "vi", "readiness", "--config", str(server_yml)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:4] == ["ĐƠN", "VỊ", "TÊN", "TỔ"]
    assert all("CHƯA RÕ" in line for line in table[1:]) and len(table) == 3
    assert run_cli(["--lang", "vi", "readiness", "--config", str(server_yml),
                    "--ward", "sai-gon"]) == 0
    detail = capsys.readouterr().out
    assert detail.startswith("Phường Sài Gòn (sai-gon): CHƯA RÕ\n")
    assert "Tiêu chí" in detail and "Kết luận" in detail
    assert "criterion" not in detail and "Segments at fault" not in detail


def test_command_line_errors_in_vietnamese(server_yml: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["--lang", "vi", "tokens", "issue", "--config", str(server_yml),
                    "--ward", "sai-gon", "--host", "Bad_Host"]) == 2
    assert capsys.readouterr().err == (
        "wardready-server: dòng lệnh: --host: 'Bad_Host' không phải tên máy hợp lệ (chỉ gồm "
        "a-z, 0-9 và '-')\n")
    assert run_cli(["--lang", "vi", "readiness", "--config", str(server_yml),
                    "--ward", "atlantis"]) == 2
    assert capsys.readouterr().err.endswith(": --ward: không có đơn vị 'atlantis'\n")


def test_the_equipment_list_command_in_vietnamese(
        server_yml: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "list.csv"
    assert run_cli(["--lang", "vi", "equipment-list", "--config", str(server_yml),
                    "--format", "csv", "--output", str(out)]) == 0
    assert out.read_bytes().startswith(b"\xef\xbb\xbf")
    assert capsys.readouterr().err.endswith(
        "0 dòng cho 0 đơn vị, 0 ₫ (thêm 0 dòng cần báo giá); 2 đơn vị chưa có dữ liệu\n")
    assert run_cli(["equipment-list", "--config", str(server_yml), "--format", "csv"]) == 0
    assert capsys.readouterr().out.startswith("section,")  # no mark on standard output
    assert run_cli(["--lang", "vi", "equipment-list", "--config", str(server_yml),
                    "--format", "pdf"]) == 1
    assert capsys.readouterr().err == ("wardready-server: --format pdf ghi ra tệp nhị phân: "
                                       "cần chỉ định --output TỆP\n")
    pdf = tmp_path / "list.pdf"
    assert run_cli(["--lang", "vi", "equipment-list", "--config", str(server_yml),
                    "--format", "pdf", "-o", str(pdf)]) == 0
    assert "Các đơn vị chưa có số liệu đo (2)" in " ".join(
        pdf_text(pdf.read_bytes(), tmp_path).split())


# --- the HTTP request list -------------------------------------------------------------------

async def test_the_request_list_takes_lang(aiohttp_client: MakeClient, tmp_path: Path) -> None:
    config = ServerConfig(database=tmp_path / "w.db", inventory=DATA / "inventory-small.yml",
                          language="vi")
    with Store(config.database) as store:
        admin = store.issue_admin_token("ops")
    client: Client = await aiohttp_client(create_app(config, load_inventory(config.inventory)))
    url = "/api/v1/equipment-list"
    resp = await client.get(url, params={"format": "markdown"}, headers=auth(admin))
    assert resp.status == 200 and resp.headers["Content-Language"] == "vi"
    text = await resp.text()
    assert text.startswith("# Danh sách đề xuất trang bị")  # the server's language
    assert "chưa có agent (phần mềm giám sát) nào của đơn vị này báo cáo" in text
    resp = await client.get(url, params={"format": "markdown", "lang": "en"},
                            headers=auth(admin))
    assert (await resp.text()).startswith("# Equipment request list")
    resp = await client.get(url, params={"format": "pdf", "lang": "vi"}, headers=auth(admin))
    assert resp.status == 200 and resp.headers["Content-Type"] == "application/pdf"
    assert (await resp.read()).startswith(b"%PDF-")
    resp = await client.get(url, params={"lang": "fr"}, headers=auth(admin))
    assert resp.status == 400
    assert (await resp.json())["error"] == "lang: unknown language; expected one of en, vi"
