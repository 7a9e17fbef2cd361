"""The Prometheus text format (0.0.4), written directly rather than through
prometheus_client's registry, so that rendered lines can be kept and joined again
(`server.exposition`)."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.utils import floatToGoString

from wardready.core.metrics import MetricSpec, Sample

Lines = dict[str, str]
"""A family's name -> its sample lines, rendered."""


def _escape(value: str) -> str:
    if "\\" not in value and "\n" not in value and '"' not in value:
        return value
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _value(value: float) -> str:
    """`floatToGoString`, with the common case (a finite number that Go prints as Python
    does) spared its extra calls."""
    text = repr(float(value))
    if text[-1] in "fn" or ("." in text and value > 0 and text.index(".") > 6):
        return floatToGoString(value)  # inf, nan, or one Go writes with an exponent
    return text


def header(spec: MetricSpec) -> str:
    """A family's HELP and TYPE lines."""
    name = spec.name  # a counter's too: the 0.0.4 text format keeps its _total
    help_text = spec.help.replace("\\", "\\\\").replace("\n", "\\n")
    return f"# HELP {name} {help_text}\n# TYPE {name} {spec.kind}\n"


def render_samples(samples: Iterable[tuple[tuple[str, ...], Sample]],
                   extra_labels: tuple[str, ...] = ()) -> Lines:
    """Sample lines by family (a histogram's `_bucket`, `_sum` and `_count` lines under its
    own name); each sample comes with values for `extra_labels`."""
    out: dict[str, list[str]] = {}
    heads: dict[tuple[str, ...], str] = {}
    """The extra labels' text, worked out once per distinct values (one agent's)."""
    for extra, sample in samples:
        spec, labels, suffix = sample.spec, sample.labels, sample.suffix
        names = spec.label_names(suffix) if suffix else spec.labels
        if (len(labels) != len(names) or len(extra) != len(extra_labels)
                or (spec.kind == "histogram") != bool(suffix)):
            raise ValueError(f"{spec.name}{suffix}: label values {extra + labels} do not "
                             f"match labels {extra_labels + names}")
        head = heads.get(extra)
        if head is None:
            head = heads[extra] = ",".join(
                f'{k}="{_escape(v)}"' for k, v in zip(extra_labels, extra, strict=True))
        if labels:
            own = ",".join(f'{k}="{_escape(v)}"' for k, v in zip(names, labels, strict=True))
            pairs = f"{head},{own}" if head else own
        else:
            pairs = head
        line = (f"{spec.name}{suffix}{{{pairs}}} {_value(sample.value)}\n" if pairs
                else f"{spec.name}{suffix} {_value(sample.value)}\n")
        lines = out.get(spec.name)
        if lines is None:
            out[spec.name] = [line]
        else:
            lines.append(line)
    return {name: "".join(lines) for name, lines in out.items()}
