#!/usr/bin/env bash
# Sets up (Debian packages as root, .venv), then starts server, Prometheus and one agent on
# loopback, waits for the first report and prints the ward's state. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
exec .venv/bin/python -m lab.demo "$@"
