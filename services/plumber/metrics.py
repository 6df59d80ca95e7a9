"""The plumber's Prometheus metrics (process-wide default registry)."""

from __future__ import annotations

from prometheus_client.metrics import Counter, Gauge, Histogram

_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)

PREPARE = Histogram("knd_plumber_prepare_seconds", "Prepare requests, by status",
                    ["status"], buckets=_BUCKETS)
ATTACH = Histogram("knd_plumber_attach_seconds", "Attach requests (whole pod), by status",
                   ["status"], buckets=_BUCKETS)
DETACH = Histogram("knd_plumber_detach_seconds", "Detach requests (whole pod), by status",
                   ["status"], buckets=_BUCKETS)
CHECKPOINT_ENTRIES = Gauge("knd_plumber_checkpoint_entries",
                           "Checkpoint rows: claims, and attachments by phase", ["kind"])
ROLLBACKS = Counter("knd_plumber_rollbacks", "Attaches rolled back after a failure")
RESTORE_FAILURES = Counter("knd_plumber_restore_failures",
                           "Devices that could not be fully restored on a first try")
