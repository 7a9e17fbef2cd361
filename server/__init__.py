"""The central service: report ingest, durable storage, /metrics."""
