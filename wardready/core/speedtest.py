"""The speed test's HTTP interface: its paths and the header that names a test's slot.

Defined once, below both ends (`wardready.checks.bandwidth` asks, `wardready.server.speedtest`
answers), as the UDP echo's wire format is (`wardready.core.echo`).
"""

from __future__ import annotations

SLOTS_PATH = "/api/v1/speedtest/slots"
"""POST asks for a slot; GET and DELETE on `SLOTS_PATH/<slot id>` read and release it."""
DOWNLOAD_PATH = "/api/v1/speedtest/download"
UPLOAD_PATH = "/api/v1/speedtest/upload"
SLOT_HEADER = "X-Wardready-Slot"
"""Names the slot a download or upload belongs to."""
