"""Load YAML files into pydantic models, reporting every mistake with its file and line."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import AfterValidator, BaseModel, ValidationError

from wardready.core.errors import ConfigError

Path_ = tuple[str | int, ...]


def _known_zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r} (an IANA name such as "
                         "Asia/Ho_Chi_Minh)") from None
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
        raise ConfigError(file, 0, "", f"cannot read file: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(file, 0, "", f"not UTF-8 text ({exc.reason})") from None
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
        message = f"invalid YAML: {exc.problem or exc.context}"
        if exc.problem and exc.context and exc.context_mark:
            message += f" ({exc.context} at line {exc.context_mark.line + 1})"
        raise ConfigError(file, line, "", message) from None
    except yaml.YAMLError as exc:
        raise ConfigError(file, 0, "", f"invalid YAML: {exc}") from None
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
                raise ConfigError(file, line, dotted(path), "mapping keys must be plain text")
            if key in seen:
                raise ConfigError(
                    file, line, dotted((*path, key)), f"duplicate key (first at line {seen[key]})"
                )
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
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise doc.error(first["loc"], _describe(first) + more) from None


def _describe(error: Any) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    message = error["msg"]
    if "input" in error and kind not in ("model_type", "dict_type"):
        given = error["input"]
        if isinstance(given, str | int | float | bool) or given is None:
            message += f", got {given!r}"
    return message


def load(path: Path, model: type[Model]) -> tuple[Model, LocatedYAML]:
    """Parse and validate one YAML file; returns the model and the located document."""
    doc = parse_yaml(path)
    return validate(doc, model), doc
