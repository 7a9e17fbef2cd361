"""The message catalogues: extract the code's messages into wardready/locale/wardready.pot,
merge them into each language's .po (new ones untranslated, gone ones dropped), and compile
the .mo files the package ships.

    python scripts/catalogues.py          # extract, merge, compile
    python scripts/catalogues.py --check  # exit 1 when a file is not what the code makes it

Translators edit wardready/locale/LANG/LC_MESSAGES/wardready.po only.
"""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Iterator
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_file
from babel.messages.mofile import read_mo, write_mo
from babel.messages.pofile import read_po, write_po

REPO = Path(__file__).resolve().parent.parent
LOCALE = REPO / "wardready" / "locale"
TEMPLATE = LOCALE / "wardready.pot"
SOURCES = ("wardready", "agent", "server", "checks", "prometheus/build.py", "grafana/build.py")
KEYWORDS = {"_": None, "N_": None, "ngettext": (1, 2)}
LANGUAGES = ("vi",)


def source_files() -> Iterator[Path]:
    """The Python files whose messages people read."""
    for name in SOURCES:
        path = REPO / name
        yield from sorted(path.rglob("*.py")) if path.is_dir() else [path]


def extract() -> Catalog:
    """Every marked message of the code, with where it is used."""
    catalog = Catalog(project="wardready", domain="wardready", charset="utf-8",
                      fuzzy=False)
    for path in source_files():
        rel = path.relative_to(REPO).as_posix()
        for lineno, message, comments, context in extract_from_file(
                "python", str(path), keywords=KEYWORDS, comment_tags=("Translators:",)):
            catalog.add(message, locations=[(rel, lineno)], auto_comments=comments,
                        context=context)
    return catalog


def _po_bytes(catalog: Catalog) -> bytes:
    out = io.BytesIO()
    write_po(out, catalog, width=100, omit_header=False, sort_output=True,
             include_lineno=False)
    return out.getvalue()


def _mo_bytes(catalog: Catalog) -> bytes:
    out = io.BytesIO()
    write_mo(out, catalog)
    return out.getvalue()


def po_path(lang: str) -> Path:
    return LOCALE / lang / "LC_MESSAGES" / "wardready.po"


def build() -> dict[Path, bytes]:
    """What each catalogue file must hold for the code as it is."""
    template = extract()
    files = {TEMPLATE: _po_bytes(template)}
    for lang in LANGUAGES:
        po = po_path(lang)
        if po.exists():
            with po.open("rb") as f:
                catalog = read_po(f, locale=lang, domain="wardready")
        else:
            catalog = Catalog(locale=lang, domain="wardready", project="wardready",
                              copyright_holder="the wardready authors", fuzzy=False,
                              language_team=lang, last_translator="the wardready authors")
        catalog.update(template, no_fuzzy_matching=True, update_header_comment=False)
        catalog.obsolete.clear()
        files[po] = _po_bytes(catalog)
        files[po.with_suffix(".mo")] = _mo_bytes(catalog)
    return files


def _stable(path: Path, data: bytes) -> object:
    # The header's creation and revision dates change on every run; compare without them.
    if path.suffix == ".mo":
        def key(value: object) -> object:  # a plural's id and forms come as lists
            return tuple(value) if isinstance(value, list) else value
        return {key(m.id): key(m.string) for m in read_mo(io.BytesIO(data)) if m.id} \
            if data else {}
    return [line for line in data.split(b"\n")
            if not line.startswith((b'"POT-Creation-Date', b'"PO-Revision-Date'))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="report files out of date instead of writing them")
    args = parser.parse_args(argv)
    stale = []
    for path, data in build().items():
        old = path.read_bytes() if path.exists() else b""
        if path.exists() and _stable(path, old) == _stable(path, data):
            continue
        stale.append(path.relative_to(REPO))
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    if args.check and stale:
        print("out of date (run python scripts/catalogues.py): "
              + ", ".join(map(str, stale)), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
