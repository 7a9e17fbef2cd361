"""The model, above the checks: the report both sides exchange, the readiness verdict, and
the criteria the Prometheus rules and the equipment request list share."""
