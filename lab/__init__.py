"""The lab: what tests, benchmarks and the demo share, and what never ships to a ward PC.

A local stack of real processes (`stack`, `demo`, `fleet`), emulated ward links and office
LANs in network namespaces (`netlab`, `delayer`, `lanlab`), a call-shaped UDP stream across
them (`callstream`), SSH peers (`sshpeers`), a simulated city (`city`) and typed check
results built from chosen figures (`results`).
"""

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
"""The repository: the shipped inventory, configs and rules the lab runs against."""
