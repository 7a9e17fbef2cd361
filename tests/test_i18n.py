"""The Vietnamese interface: every message the code marks has a translation with the same
fields, the shipped catalogues are what the code makes them, and the language is chosen by
--lang, then the config, then the locale."""

from __future__ import annotations

import datetime
import re
import string
import subprocess
import sys
from pathlib import Path

import pytest
from babel.messages.pofile import read_po

from tests.conftest import load_file
from wardready.core import i18n

REPO = Path(__file__).resolve().parent.parent
CATALOGUES = load_file(REPO / "scripts" / "catalogues.py", "wardready_catalogues")


def _fields(message: str) -> set[str]:
    """The fields of a message: str.format's ({ward}, {count:,}, ...) by name and spec, or
    for the %-style messages of argparse's, their %(name)s and %s."""
    if re.search(r"%(\(\w+\))?[srd]", message) and "{" not in message:
        return set(re.findall(r"%(?:\(\w+\))?[srd]", message))
    return {f"{name}:{spec}" for _, name, spec, _ in string.Formatter().parse(message)
            if name is not None}


@pytest.fixture(scope="module")
def extracted() -> list[str | tuple[str, ...]]:
    return [m.id for m in CATALOGUES.extract() if m.id]


@pytest.fixture(scope="module")
def vietnamese() -> dict[str | tuple[str, ...], str | tuple[str, ...]]:
    with CATALOGUES.po_path("vi").open("rb") as f:
        catalog = read_po(f, locale="vi")
    return {m.id: m.string for m in catalog if m.id and not m.fuzzy}


def test_every_message_has_a_vietnamese_translation(
        extracted: list[str | tuple[str, ...]],
        vietnamese: dict[str | tuple[str, ...], str | tuple[str, ...]]) -> None:
    missing = [m for m in extracted
               if not vietnamese.get(m) or (isinstance(vietnamese[m], tuple)
                                            and not all(vietnamese[m]))]
    assert not missing, f"{len(missing)} messages lack a vi translation: {missing[:10]}"


def test_translations_keep_the_fields(
        extracted: list[str | tuple[str, ...]],
        vietnamese: dict[str | tuple[str, ...], str | tuple[str, ...]]) -> None:
    wrong = []
    for message in extracted:
        ids = message if isinstance(message, tuple) else (message,)
        texts = vietnamese.get(message) or ()
        texts = texts if isinstance(texts, tuple) else (texts,)
        want = set().union(*map(_fields, ids))
        wrong += [(message, text) for text in texts if text and _fields(text) != want]
    assert not wrong, wrong[:5]


def test_the_shipped_catalogues_are_up_to_date() -> None:
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "catalogues.py"), "--check"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize(("flag", "configured", "environ", "expected"), [
    ("vi", "en", {"LANG": "en_US.UTF-8"}, "vi"),
    (None, "vi", {"LANG": "en_US.UTF-8"}, "vi"),
    (None, None, {"LANG": "vi_VN.UTF-8"}, "vi"),
    (None, None, {"LANGUAGE": "vi:en", "LANG": "en_US.UTF-8"}, "vi"),
    (None, None, {"LC_ALL": "C.UTF-8", "LANG": "vi_VN.UTF-8"}, "en"),
    (None, None, {"LANG": "fr_FR.UTF-8"}, "en"),
    (None, None, {}, "en"),
])
def test_the_language_comes_from_the_flag_then_the_config_then_the_locale(
        flag: str | None, configured: str | None, environ: dict[str, str],
        expected: str) -> None:
    assert i18n.choose(flag, configured, environ) == expected


def test_argparse_s_own_words_follow_the_language() -> None:
    import argparse

    i18n.localize_argparse()

    def parser() -> argparse.ArgumentParser:
        made = argparse.ArgumentParser(prog="wardready-agent", exit_on_error=False)
        made.add_argument("--lang", choices=["en", "vi"])
        return made
    with i18n.using("vi"):  # the CLIs build their parser in the chosen language
        assert parser().format_usage().startswith("cách dùng: wardready-agent")
        assert "hiện hướng dẫn này rồi thoát" in parser().format_help()
        with pytest.raises(argparse.ArgumentError, match=r"^tham số --lang: lựa chọn không "
                                                         r"hợp lệ: 'fr' \(chọn một trong"):
            parser().parse_args(["--lang", "fr"])
    assert parser().format_usage().startswith("usage: wardready-agent")


def test_an_unknown_language_is_one_clear_line() -> None:
    with pytest.raises(ValueError, match=r"^--lang: unknown language 'fr'; expected one of "
                                         r"en, vi$"):
        i18n.choose("fr", None, {})


def test_the_code_marks_messages(extracted: list[str | tuple[str, ...]]) -> None:
    # Not vacuous: the agent's table, the request list, the alerts and dashboards are in.
    for message in ("READY", "Equipment request list", "PASS"):
        assert message in extracted, message
    assert len(extracted) > 500, len(extracted)


def test_a_message_reads_in_the_chosen_language() -> None:
    with i18n.using("vi"):
        assert i18n._("READY") == "SẴN SÀNG"
        # Numbers in a Vietnamese message take its marks: 2,5 % and 1.234,5 (TCVN, and
        # the Unicode CLDR's vi locale).
        assert i18n._("{value:.1f} % loss").format(value=2.5) == "mất gói 2,5 %"
        assert i18n.decimal_mark(f"{1234.5:,.1f}") == "1.234,5"
    assert i18n._("READY") == "READY"
    assert i18n._("{value:.1f} % loss").format(value=2.5) == "2.5 % loss"


def test_counted_messages_take_the_form_their_count_calls_for() -> None:
    from wardready.server.equipment_formats import lines_needing_a_quote

    # English has two forms (1 line, 2 lines); Vietnamese one (Plural-Forms: nplurals=1),
    # so the compiled catalogue's plural entry serves every count.
    assert lines_needing_a_quote(1) == "1 line needing a quote"
    assert lines_needing_a_quote(2) == "2 lines needing a quote"
    assert i18n.ngettext("{count} ward", "{count} wards", 1).format(count=1) == "1 ward"
    with i18n.using("vi"):
        assert lines_needing_a_quote(1) == "1 dòng cần báo giá"
        assert lines_needing_a_quote(12) == "12 dòng cần báo giá"
        assert i18n.ngettext("{count} ward", "{count} wards", 2).format(count=2) == "2 đơn vị"


def test_money_and_dates_are_written_the_vietnamese_way() -> None:
    day = datetime.date(2026, 12, 6)
    with i18n.using("vi"):
        assert i18n.format_vnd(5_000_000) == "5.000.000 ₫"
        assert i18n.format_date(day) == "06/12/2026"
        assert i18n.dated_at("Thành phố Hồ Chí Minh", day) == \
            "Thành phố Hồ Chí Minh, ngày 06 tháng 12 năm 2026"
        assert i18n.format_number(1234.5) == "1.234,5"
        # Decree 30/2020/ND-CP, Appendix I: "ngày 05 tháng 02 năm ...", "tháng 7".
        assert i18n.dated_at("Hà Nội", datetime.date(2026, 2, 5)).endswith(
            "ngày 05 tháng 02 năm 2026")
        assert i18n.dated_at("Hà Nội", datetime.date(2026, 7, 15)).endswith(
            "ngày 15 tháng 7 năm 2026")
    assert i18n.format_vnd(5_000_000) == "VND 5,000,000"
    assert i18n.format_date(day) == "6 December 2026"
    assert i18n.format_number(1234.5) == "1,234.5"


def test_inventory_text_may_come_in_each_language() -> None:
    text = {"en": "Working Group No. 1", "vi": "Tổ công tác số 1"}
    with i18n.using("vi"):
        assert i18n.localized(text) == "Tổ công tác số 1"
        assert i18n.localized("Phường Sài Gòn") == "Phường Sài Gòn"
    assert i18n.localized(text) == "Working Group No. 1"
