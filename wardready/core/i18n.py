"""The language people read wardready in: gettext catalogues (wardready/locale), English in
the code and Vietnamese beside it, chosen by `--lang`, then the config, then the locale.

Code marks a message with `_()` where it is shown, or with `N_()` where it is defined ahead
of time (a table's headings) and translated with `_()` at the point of use. Messages are
`str.format` templates with named fields, so a translation may reorder them. Log lines stay
English: they are searched for, not read at a counter. `scripts/catalogues.py` extracts and
compiles; tests/test_i18n.py fails on a message without a Vietnamese translation.
"""

from __future__ import annotations

import datetime as _dt
import functools
import gettext
import locale as _locale
import os
import string
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal, get_args

Language = Literal["en", "vi"]
LANGUAGES: tuple[Language, ...] = get_args(Language)
DEFAULT: Language = "en"
DOMAIN = "wardready"
LOCALE_DIR = Path(__file__).resolve().parent.parent / "locale"

_current: ContextVar[Language] = ContextVar("wardready_language", default=DEFAULT)


@functools.cache
def translations(lang: Language) -> gettext.NullTranslations:
    """The compiled catalogue of `lang` (English: the messages as written)."""
    if lang == DEFAULT:
        return gettext.NullTranslations()
    return gettext.translation(DOMAIN, LOCALE_DIR, languages=[lang])


_MARKS = str.maketrans({".": ",", ",": "."})


def decimal_mark(text: str) -> str:
    """A number written the current language's way: 1,234.5 stays, 1.234,5 in Vietnamese."""
    return text.translate(_MARKS) if _current.get() == "vi" else text


class _Numbers(string.Formatter):
    def format_field(self, value: Any, format_spec: str) -> str:
        text = super().format_field(value, format_spec)
        number = isinstance(value, float) or (
            isinstance(value, int) and not isinstance(value, bool) and "," in format_spec)
        return decimal_mark(text) if number else text


_NUMBERS = _Numbers()


class _Message(str):
    """A translated message whose `format()` writes numbers with the language's marks
    (`{loss:.1f} %` gives 2,5 % in Vietnamese)."""

    __slots__ = ()

    def format(self, *args: Any, **kwargs: Any) -> str:
        return _NUMBERS.vformat(self, args, kwargs)


def _(message: str) -> str:
    """`message` in the current language."""
    lang = _current.get()
    text = translations(lang).gettext(message)
    return text if lang == DEFAULT else _Message(text)


def ngettext(singular: str, plural: str, n: int) -> str:
    """The form of a counted message for `n`, in the current language."""
    lang = _current.get()
    text = translations(lang).ngettext(singular, plural, n)
    return text if lang == DEFAULT else _Message(text)


def N_(message: str) -> str:
    """Mark `message` for the catalogue where it is defined; `_()` translates it where shown."""
    return message


def language() -> Language:
    """The current language."""
    return _current.get()


def set_language(lang: Language) -> None:
    """Make `lang` the language of this context (a CLI calls it once, at start)."""
    _current.set(lang)


@contextmanager
def using(lang: Language) -> Iterator[None]:
    """Speak `lang` inside the block (a server request for a list in Vietnamese)."""
    token = _current.set(lang)
    try:
        yield
    finally:
        _current.reset(token)


def parse_language(value: str, where: str) -> Language:
    """`value` as a shipped language, or ValueError naming `where` it came from."""
    code = value.strip().lower().replace("-", "_").split("_")[0].split(".")[0]
    for lang in LANGUAGES:
        if code == lang:
            return lang
    raise ValueError(f"{where}: unknown language {value!r}; expected one of "
                     f"{', '.join(LANGUAGES)}")


def accepted(header: str | None, default: Language = DEFAULT) -> Language:
    """The shipped language an HTTP Accept-Language header prefers (RFC 9110 12.5.4: by
    q-value, then order), else `default`."""
    ranked = []
    for i, part in enumerate((header or "").split(",")):
        tag, _sep, params = part.strip().partition(";")
        q = 1.0
        for param in params.split(";"):
            name, _eq, value = param.strip().partition("=")
            if name == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        ranked.append((-q, i, tag.strip().lower().split("-")[0]))
    for negative_q, _i, code in sorted(ranked):
        if negative_q < 0 and code in LANGUAGES:
            return code
    return default


def from_locale(environ: Mapping[str, str] | None = None) -> Language:
    """The language the user's locale asks for, as gettext reads it (LANGUAGE, LC_ALL,
    LC_MESSAGES, LANG; Windows: the user's locale); English when it is none we ship."""
    env = os.environ if environ is None else environ
    for var in ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG"):
        for value in env.get(var, "").split(":"):
            if value and value not in ("C", "POSIX"):
                try:
                    return parse_language(value, var)
                except ValueError:
                    return DEFAULT
            if value:
                return DEFAULT
    if environ is None and os.name == "nt":  # "Vietnamese_Vietnam" there
        name = (_locale.getlocale()[0] or "").lower()
        return "vi" if name.startswith(("vi", "vietnamese")) else DEFAULT
    return DEFAULT


def choose(flag: str | None, configured: str | None,
           environ: Mapping[str, str] | None = None) -> Language:
    """The language to speak: `--lang`, then the config's `language`, then the locale."""
    if flag:
        return parse_language(flag, "--lang")
    if configured:
        return parse_language(configured, "language")
    return from_locale(environ)


def file_language(path: Path) -> str | None:
    """A YAML config's `language:` as written, read before the file is validated so that its
    errors are reported in that language; None when unreadable or not given (validation
    reports a bad value later, with its line)."""
    import re

    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:  # its syntax error is told in the language it asks for
        found = re.search(r"^language:[ \t]*['\"]?([A-Za-z_.-]+)", text, re.MULTILINE)
        return found.group(1) if found else None
    value = data.get("language") if isinstance(data, dict) else None
    return value if isinstance(value, str) else None


def command_language(argv: Sequence[str] | None, default_config: Path | None) -> Language:
    """A command line's language: `--lang` wherever it stands, else the `--config` file's
    `language:`, else the locale. An unknown `--lang` raises ValueError, one line in the
    language the rest would have given."""
    import argparse

    early = argparse.ArgumentParser(add_help=False)
    early.add_argument("--lang")
    early.add_argument("--config", type=Path, default=default_config)
    known = early.parse_known_args(argv)[0]
    try:
        lang = choose(None, file_language(known.config) if known.config else None)
    except ValueError:
        lang = from_locale()
    if known.lang:
        try:
            return parse_language(known.lang, "--lang")
        except ValueError:
            with using(lang):
                raise ValueError(_("--lang: unknown language {value}; expected one of "
                                   "{languages}").format(value=repr(known.lang),
                                                         languages=", ".join(LANGUAGES))
                                 ) from None
    return lang


ARGPARSE_MESSAGES = (
    N_("usage: "), N_("positional arguments"), N_("options"),
    N_("show this help message and exit"), N_("%(prog)s: error: %(message)s\n"),
    N_("argument %(argument_name)s: %(message)s"), N_("unrecognized arguments: %s"),
    N_("the following arguments are required: %s"), N_("one of the arguments %s is required"),
    N_("not allowed with argument %s"), N_("ignored explicit argument %r"),
    N_("expected one argument"), N_("expected at most one argument"),
    N_("expected at least one argument"), N_("unexpected option string: %s"),
    N_("ambiguous option: %(option)s could match %(matches)s"),
    N_("invalid %(type)s value: %(value)r"),
    N_("invalid choice: %(value)r (choose from %(choices)s)"),
    N_("unknown parser %(parser_name)r (choices: %(choices)s)"))
"""argparse's own words a user meets (Python 3.11), so that the catalogue carries them."""


def localize_argparse() -> None:
    """Let argparse's own words (usage:, error:, ...) follow the current language: it looks
    its gettext functions up as module globals at each call."""
    import argparse

    argparse._ = _  # type: ignore[attr-defined]
    argparse.ngettext = ngettext  # type: ignore[attr-defined]


Localized = str | dict[Language, str]
"""Text in the inventory: one string for every language, or one per language."""


def localized(text: Localized) -> str:
    """`text` in the current language (else English, else any it has)."""
    if isinstance(text, str):
        return text
    return text.get(_current.get()) or text.get(DEFAULT) or next(iter(text.values()), "")


# -- numbers, money and dates, the way the reader writes them (Babel, server side) --

_BABEL_LOCALE: dict[Language, str] = {"en": "en", "vi": "vi_VN"}


def format_number(value: float, digits: int = 1) -> str:
    """`value` with `digits` decimals: 1,234.5 in English, 1.234,5 in Vietnamese."""
    from babel.numbers import format_decimal

    pattern = "#,##0" + ("." + "0" * digits if digits else "")
    return str(format_decimal(value, format=pattern, locale=_BABEL_LOCALE[_current.get()]))


def format_vnd(amount: int) -> str:
    """An amount of đồng: 5.000.000 ₫ in Vietnamese, VND 5,000,000 in English."""
    from babel.numbers import format_decimal

    lang = _current.get()
    number = format_decimal(amount, format="#,##0", locale=_BABEL_LOCALE[lang])
    return f"{number} ₫" if lang == "vi" else f"VND {number}"


def format_date(day: _dt.date) -> str:
    """A date as the city writes it (06/12/2026), or as English does (6 December 2026)."""
    if _current.get() == "vi":
        return day.strftime("%d/%m/%Y")
    return f"{day.day} {day:%B %Y}"


def dated_at(place: str, day: _dt.date) -> str:
    """The place-and-date line of an official document: "Thành phố Hồ Chí Minh, ngày 06
    tháng 12 năm 2026", or "Ho Chi Minh City, 6 December 2026". Decree 30/2020/ND-CP pads
    days below 10 and the months January and February with a zero (tháng 02, tháng 7)."""
    if _current.get() == "vi":
        month = f"{day.month:02d}" if day.month < 3 else str(day.month)
        return f"{place}, ngày {day:%d} tháng {month} năm {day:%Y}"
    return f"{place}, {format_date(day)}"
