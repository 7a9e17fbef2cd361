"""Load YAML files into pydantic models, reporting every mistake with its file and line.

The messages are in the current language (`wardready.core.i18n`): pydantic's English ones are
translated by the error's `type` and `ctx` (`PYDANTIC_MESSAGES`); a type not listed there
keeps pydantic's text. In English every message is as pydantic writes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import AfterValidator, BaseModel, ValidationError

from wardready.core.errors import ConfigError
from wardready.core.i18n import N_, _, language

Path_ = tuple[str | int, ...]


def _known_zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(_("unknown time zone {name} (an IANA name such as "
                           "Asia/Ho_Chi_Minh)").format(name=repr(name))) from None
    return name


TimeZoneName = Annotated[str, AfterValidator(_known_zone)]
"""An IANA time zone name that this machine's zone database knows."""
Model = TypeVar("Model", bound=BaseModel)


class LocatedYAML:
    """A parsed YAML document together with the line of every mapping key and list item."""

    def __init__(self, file: str, data: Any, lines: dict[Path_, int]) -> None:
        self.file = file
        self.data = data
        self.lines = lines

    def line_of(self, path: Sequence[str | int]) -> int:
        """Line of the deepest node on `path` that exists in the document (1-based)."""
        path = tuple(path)
        while path and path not in self.lines:
            path = path[:-1]
        return self.lines.get(path, 1)

    def error(self, path: Sequence[str | int], message: str) -> ConfigError:
        """A ConfigError pointing at `path` in this document."""
        return ConfigError(self.file, self.line_of(path), dotted(path), message)


def dotted(path: Sequence[str | int]) -> str:
    """Render a path as a user reads it: `wards[3].working_group`."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def parse_yaml(path: Path) -> LocatedYAML:
    """Parse one YAML file safely; duplicate keys and syntax errors are ConfigErrors."""
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(file, 0, "", _("cannot read file: {error}").format(
            error=exc.strerror or exc)) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(file, 0, "", _("not UTF-8 text ({reason})").format(
            reason=exc.reason)) from None
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        lines: dict[Path_, int] = {}
        if node is not None:
            _index(loader, node, (), lines, file)
            data = loader.construct_document(node)
        else:
            data = None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        # PyYAML's own words (the problem, its context) stay as it writes them.
        if exc.problem and exc.context and exc.context_mark:
            message = _("invalid YAML: {problem} ({context} at line {line})").format(
                problem=exc.problem, context=exc.context, line=exc.context_mark.line + 1)
        else:
            message = _("invalid YAML: {problem}").format(problem=exc.problem or exc.context)
        raise ConfigError(file, line, "", message) from None
    except yaml.YAMLError as exc:
        raise ConfigError(file, 0, "", _("invalid YAML: {problem}").format(
            problem=exc)) from None
    finally:
        loader.dispose()
    return LocatedYAML(file, data, lines)


def _index(
    loader: yaml.SafeLoader, node: yaml.Node, path: Path_, lines: dict[Path_, int], file: str
) -> None:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if not isinstance(key, str | int):
                raise ConfigError(file, line, dotted(path), _("mapping keys must be plain text"))
            if key in seen:
                raise ConfigError(
                    file, line, dotted((*path, key)),
                    _("duplicate key (first at line {line})").format(line=seen[key]))
            seen[key] = line
            _index(loader, value_node, (*path, key), lines, file)
            lines[(*path, key)] = line
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _index(loader, item, (*path, i), lines, file)


def validate(doc: LocatedYAML, model: type[Model]) -> Model:
    """Validate a parsed document against `model`; the first mistake becomes a ConfigError."""
    try:
        return model.model_validate(doc.data if doc.data is not None else {})
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        first = errors[0]
        message = describe(first)
        if len(errors) > 1:
            message = _("{message} (and {count} more)").format(message=message,
                                                                count=len(errors) - 1)
        raise doc.error(first["loc"], message) from None


PYDANTIC_MESSAGES: dict[str, str] = {
    "missing": N_("required key is missing"),
    "extra_forbidden": N_("unknown key"),
    "string_type": N_("Input should be a valid string"),
    "int_type": N_("Input should be a valid integer"),
    "int_parsing": N_("Input should be a valid integer, unable to parse string as an integer"),
    "int_from_float": N_("Input should be a valid integer, got a number with a fractional "
                         "part"),
    "float_type": N_("Input should be a valid number"),
    "float_parsing": N_("Input should be a valid number, unable to parse string as a number"),
    "finite_number": N_("Input should be a finite number"),
    "bool_type": N_("Input should be a valid boolean"),
    "bool_parsing": N_("Input should be a valid boolean, unable to interpret input"),
    "greater_than": N_("Input should be greater than {gt}"),
    "greater_than_equal": N_("Input should be greater than or equal to {ge}"),
    "less_than": N_("Input should be less than {lt}"),
    "less_than_equal": N_("Input should be less than or equal to {le}"),
    "multiple_of": N_("Input should be a multiple of {multiple_of}"),
    "literal_error": N_("Input should be {expected}"),
    "enum": N_("Input should be {expected}"),
    "string_pattern_mismatch": N_("String should match pattern '{pattern}'"),
    "string_too_short": N_("String should have at least {min_length} characters"),
    "string_too_long": N_("String should have at most {max_length} characters"),
    "too_short": N_("Should have at least {min_length} items, not {actual_length}"),
    "too_long": N_("Should have at most {max_length} items, not {actual_length}"),
    "dict_type": N_("Input should be a valid dictionary"),
    "model_type": N_("Input should be a mapping of keys"),
    "list_type": N_("Input should be a valid list"),
    "tuple_type": N_("Input should be a valid list"),
    "set_type": N_("Input should be a valid list"),
    "date_type": N_("Input should be a valid date"),
    "date_parsing": N_("Input should be a valid date in the format YYYY-MM-DD"),
    "time_type": N_("Input should be a valid time"),
    "time_parsing": N_("Input should be a valid time of day"),
    "url_parsing": N_("Input should be a valid URL"),
    "value_error": N_("Value error, {error}"),
}
"""pydantic's errors in words wardready translates, by type; `{fields}` from the error's
`ctx`. English keeps pydantic's own text (`msg`); these are used in the other languages."""


def _ctx_text(value: object) -> str:
    """A ctx value as pydantic writes it in its message: 0, not 0.0."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def describe(error: Any) -> str:
    """One pydantic error (an item of `ValidationError.errors()`) in the current language,
    with the value given when it is a plain one."""
    kind = error["type"]
    if kind in ("extra_forbidden", "missing"):
        return _(PYDANTIC_MESSAGES[kind])
    message = error["msg"]
    if language() != "en" and kind in PYDANTIC_MESSAGES:
        ctx = {k: _ctx_text(v) for k, v in (error.get("ctx") or {}).items()}
        if "expected" in ctx:  # pydantic joins the last choice with " or "
            ctx["expected"] = ctx["expected"].replace("' or '", "' " + _("or") + " '")
        try:
            message = _(PYDANTIC_MESSAGES[kind]).format(**ctx)
        except (KeyError, IndexError, ValueError):
            message = error["msg"]  # a ctx this pydantic no longer gives: its own words
    if "input" in error and kind not in ("model_type", "dict_type"):
        given = error["input"]
        if isinstance(given, str | int | float | bool) or given is None:
            message = _("{message}, got {value}").format(message=message, value=repr(given))
    return message


def load(path: Path, model: type[Model]) -> tuple[Model, LocatedYAML]:
    """Parse and validate one YAML file; returns the model and the located document."""
    doc = parse_yaml(path)
    return validate(doc, model), doc
