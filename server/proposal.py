"""The equipment request list as an official proposal to sign (PDF, A4), laid out as the
city's administrative documents are (Decree 30/2020/NĐ-CP): the governing and issuing bodies
top left, the national title and motto top right, the place-and-date line, the title, then
a table per ward (item, quantity, unit price, amount, reason) with the ward's total, the
totals of each working group and the grand total, and the signature block.

fpdf2 is imported only here, when a PDF is asked for. The fonts are embedded TrueType files
that carry Vietnamese glyphs (Debian's fonts-dejavu-core by default; `proposal:` in the
server config names others).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from datetime import tzinfo
from pathlib import Path
from typing import TYPE_CHECKING

from wardready.core import i18n
from wardready.core.errors import WardreadyError
from wardready.core.i18n import N_, _, ngettext
from wardready.server.config import ProposalConfig
from wardready.server.equipment import EquipmentList, Line

if TYPE_CHECKING:
    from fpdf import FPDF

FONT = "wardready"
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP = 25.0, 15.0, 18.0
"""Millimetres; Decree 30 asks 30-35 left, 15-20 right, 20-25 top: a little tighter so the
reason column stays readable."""
# Table columns: No., item, quantity, unit price, amount, reason (mm; 170 in all).
COLUMNS = (N_("No."), N_("Item"), N_("Qty"), N_("Unit price"), N_("Amount"), N_("Reason"))
WIDTHS = (9.0, 40.0, 10.0, 28.0, 29.0, 54.0)
ALIGN = ("C", "L", "R", "R", "R", "L")
SIGNATURE_HEIGHT = 48.0
"""The signature block's height (titles, hint, room to sign, the name line): never split."""


class ProposalError(WardreadyError):
    """The proposal cannot be made (a font is missing)."""


def _font(path: Path | None, key: str) -> Path | None:
    if path is not None and not path.is_file():
        raise ProposalError(f"PDF font {path} not found: install fonts-dejavu-core or set "
                            f"proposal.{key} in the server configuration")
    return path


def to_pdf(lst: EquipmentList, tz: tzinfo, options: ProposalConfig | None = None) -> bytes:
    """The proposal, in the current language (`i18n.using`), as PDF bytes."""
    from fpdf import FPDF

    options = options or ProposalConfig()
    regular = _font(options.font_file, "font_file")
    bold = _font(options.bold_font_file, "bold_font_file")
    italic = options.italic_font_file
    if italic is not None and not italic.is_file():
        italic = None  # optional: the hints are then set upright

    page_text = _("Page {page} of {pages}")

    class Document(FPDF):
        def footer(self) -> None:
            self.set_y(-12)
            self.set_font(FONT, "", 8)
            self.cell(0, 5, page_text.format(page=self.page_no(), pages="{nb}"), align="C")

    pdf = Document(orientation="P", unit="mm", format="A4")
    pdf.add_font(FONT, "", str(regular))
    pdf.add_font(FONT, "B", str(bold))
    pdf.add_font(FONT, "I", str(italic or regular))
    pdf.set_margins(MARGIN_LEFT, MARGIN_TOP, MARGIN_RIGHT)
    pdf.set_auto_page_break(True, margin=18)
    pdf.set_title(_("Proposal for equipment"))
    pdf.set_creator("wardready")
    pdf.set_lang(i18n.language())
    pdf.add_page()

    day = dt.datetime.fromtimestamp(lst.generated_at, tz).date()
    _heading(pdf, options, day)
    _title(pdf, lst, day)
    _tables(pdf, lst)
    _no_data(pdf, lst)
    _signatures(pdf)
    return bytes(pdf.output())


def _width(pdf: FPDF) -> float:
    return float(pdf.w - pdf.l_margin - pdf.r_margin)


def _centred(pdf: FPDF, x: float, width: float, text: str, style: str, size: float,
             height: float = 5.5) -> None:
    """One line centred in [x, x + width], shrunk to fit."""
    pdf.set_font(FONT, style, size)
    while pdf.get_string_width(text) > width and size > 6:
        size -= 0.5
        pdf.set_font(FONT, style, size)
    pdf.set_x(x)
    pdf.cell(width, height, text, align="C")
    pdf.ln(height)


def _rule(pdf: FPDF, x: float, width: float, length: float) -> None:
    """The short line under a body's name and under the motto."""
    y = pdf.get_y() + 0.8
    pdf.set_line_width(0.3)
    pdf.line(x + (width - length) / 2, y, x + (width + length) / 2, y)


def _heading(pdf: FPDF, options: ProposalConfig, day: dt.date) -> None:
    left_w, right_w = 72.0, _width(pdf) - 72.0
    left_x, right_x = pdf.l_margin, pdf.l_margin + left_w
    top = pdf.get_y()
    # Translators: the governing body, top left of the proposal; a line break where its
    # name is best broken in the 72 mm column.
    parent = options.parent_body or _("HO CHI MINH CITY\nPEOPLE'S COMMITTEE")
    issuer = options.issuer or _("DEPARTMENT OF SCIENCE AND TECHNOLOGY")
    for text, style in ((parent, ""), (issuer, "B")):
        pdf.set_font(FONT, style, 10.5)  # wrapped at words: a long body takes two lines
        pdf.set_x(left_x)
        pdf.multi_cell(left_w, 5.5, text.upper(), align="C", new_x="LEFT", new_y="NEXT")
    _rule(pdf, left_x, left_w, 25)
    left_bottom = pdf.get_y()

    pdf.set_y(top)
    _centred(pdf, right_x, right_w, _("SOCIALIST REPUBLIC OF VIET NAM"), "B", 10.5)
    motto = _("Independence - Freedom - Happiness")
    _centred(pdf, right_x, right_w, motto, "B", 11)
    pdf.set_font(FONT, "B", 11)
    _rule(pdf, right_x, right_w, pdf.get_string_width(motto))
    pdf.set_y(max(left_bottom, pdf.get_y()) + 5)
    place = options.place or _("Ho Chi Minh City")
    _centred(pdf, right_x, right_w, i18n.dated_at(place, day), "I", 10.5)
    pdf.ln(6)


def _paragraph(pdf: FPDF, text: str, style: str = "", size: float = 10.5,
               align: str = "J", height: float = 5.5) -> None:
    pdf.set_font(FONT, style, size)
    pdf.set_x(pdf.l_margin)
    pdf.multi_cell(_width(pdf), height, text, align=align, new_x="LMARGIN", new_y="NEXT")


def _title(pdf: FPDF, lst: EquipmentList, day: dt.date) -> None:
    _paragraph(pdf, _("PROPOSAL"), "B", 14, "C", 7)
    _paragraph(pdf, _("on equipment for online meetings and the city's digital platforms "
                      "in the wards, communes and special zone"), "B", 11.5, "C", 6)
    if len(lst.working_groups) == 1:
        (group, name), = lst.working_groups.items()
        scope = _("Working group: {name} ({id})").format(name=name, id=group)
    else:
        scope = _("Scope: the whole city ({count} working groups)").format(
            count=len(lst.working_groups))
    _paragraph(pdf, scope, "", 11, "C", 6)
    pdf.ln(4)
    _paragraph(pdf, _(
        "Based on the measurements recorded by wardready up to {date}, we propose the "
        "equipment below so that each unit meets its requirement profile. Unit prices are "
        "indicative, from the catalogue; items marked \"needs a quote\" are not in the "
        "totals.").format(date=i18n.format_date(day)))
    pdf.ln(3)


def _money(amount: int | None) -> str:
    return _("needs a quote") if amount is None else i18n.format_vnd(amount)


def _tables(pdf: FPDF, lst: EquipmentList) -> None:
    from fpdf.fonts import FontFace

    grouped = lst.by_group()
    if not grouped:
        _paragraph(pdf, _("No unit needs equipment on the evidence so far."), "I")
    for number, (group, lines) in enumerate(grouped.items(), 1):
        name = lst.working_groups.get(group, group)
        _keep_with_next(pdf, KEEP_GROUP)
        _paragraph(pdf, f"{_roman(number)}. {name} ({group})", "B", 11.5)
        pdf.ln(1)
        wards: dict[str, list[Line]] = defaultdict(list)
        for line in lines:
            wards[line.ward.id].append(line)
        for w, (_id, ward_lines) in enumerate(wards.items(), 1):
            ward = ward_lines[0].ward
            pdf.ln(1)
            _keep_with_next(pdf, KEEP_WARD)
            _paragraph(pdf, f"{w}. {ward.name}", "B", 10.5)
            pdf.ln(1)
            pdf.set_font(FONT, "", 8.5)
            with pdf.table(col_widths=WIDTHS, width=_width(pdf), text_align=ALIGN,
                           line_height=4.2, padding=1.2, v_align="TOP", repeat_headings=1,
                           headings_style=FontFace(emphasis="BOLD", fill_color=(225, 225, 225)),
                           ) as table:
                head = table.row()
                for heading in COLUMNS:
                    head.cell(_(heading), align="C")
                for i, line in enumerate(ward_lines, 1):
                    row = table.row()
                    for text in (str(i), line.description, str(line.quantity),
                                 _money(line.unit_price_vnd), _money(line.subtotal_vnd)
                                 if line.unit_price_vnd is not None else "—",
                                 line.stated_reason):
                        row.cell(text)
                total = table.row()
                bold = FontFace(emphasis="BOLD")
                total.cell(_("Total for {ward}").format(ward=ward.name), colspan=4, align="R",
                           style=bold)
                total.cell(i18n.format_vnd(sum(x.subtotal_vnd or 0 for x in ward_lines)),
                           align="R", style=bold)
                unpriced = sum(x.subtotal_vnd is None for x in ward_lines)
                total.cell(_quote_note(unpriced))
        priced = sum(x.subtotal_vnd or 0 for x in lines)
        pdf.ln(2)
        _paragraph(pdf, _("Total for {name}: {amount}").format(
            name=name, amount=i18n.format_vnd(priced)) + _quote_suffix(
            sum(x.subtotal_vnd is None for x in lines)), "B", 10.5)
        pdf.ln(2)
    pdf.ln(2)
    _paragraph(pdf, _("GRAND TOTAL: {amount}").format(amount=i18n.format_vnd(lst.total_vnd))
               + _quote_suffix(lst.unpriced_lines), "B", 11.5)


KEEP_GROUP, KEEP_WARD = 50.0, 38.0
"""Room (mm) a working group's or a ward's heading needs below it for the start of its
table: less, and the heading goes to the next page with it."""


def _keep_with_next(pdf: FPDF, height: float) -> None:
    if pdf.will_page_break(height):
        pdf.add_page()


def _quote_note(count: int) -> str:
    if not count:
        return ""
    return ngettext("{count} item needs a quote, not included",
                    "{count} items need a quote, not included", count).format(count=count)


def _quote_suffix(count: int) -> str:
    return f" ({_quote_note(count)})" if count else ""


def _roman(n: int) -> str:
    """Section numbers of an administrative document: I, II, III, ..."""
    out = ""
    for value, letters in ((1000, "M"), (900, "CM"), (500, "D"), (400, "CD"), (100, "C"),
                           (90, "XC"), (50, "L"), (40, "XL"), (10, "X"), (9, "IX"), (5, "V"),
                           (4, "IV"), (1, "I")):
        while n >= value:
            out, n = out + letters, n - value
    return out


def _no_data(pdf: FPDF, lst: EquipmentList) -> None:
    names = sorted({e.ward.id: e.ward.name for e in lst.no_data}.values())
    if not names:
        return
    pdf.ln(2)
    _paragraph(pdf, _("Units without measurements ({count}), for which nothing can be proposed "
                      "yet: {units}.").format(count=len(names), units=", ".join(names)),
               "I", 9.5, height=5)


def _signatures(pdf: FPDF) -> None:
    if pdf.get_y() + SIGNATURE_HEIGHT + 8 > pdf.h - pdf.b_margin:
        pdf.add_page()
    pdf.ln(8)
    half = _width(pdf) / 2
    top = pdf.get_y()
    for x, title, hint in ((pdf.l_margin, _("PREPARED BY"), _("(signature and full name)")),
                           (pdf.l_margin + half, _("HEAD OF THE AGENCY"),
                            _("(signature, full name and seal)"))):
        pdf.set_y(top)
        _centred(pdf, x, half, title, "B", 11)
        _centred(pdf, x, half, hint, "I", 9.5)
    pdf.set_y(top + SIGNATURE_HEIGHT)
