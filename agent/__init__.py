"""The ward agent: schedules checks, exposes their metrics, delivers reports."""
