"""The publisher's Prometheus metrics, in one place so names stay consistent.

Counters are process-wide (prometheus_client's default registry); tests read
them as differences.
"""

from __future__ import annotations

from prometheus_client.metrics import Counter, Gauge

DROPPED = Counter("knd_publisher_dropped_devices",
                  "Inventory devices left out of the ResourceSlices, by why "
                  "(invalid, duplicate, rejected by the API server)", ["why"])
API_WRITES = Counter("knd_publisher_api_writes",
                     "ResourceSlice writes that the API server accepted, by verb", ["verb"])
API_ERRORS = Counter("knd_publisher_api_errors",
                     "Failed API calls, by HTTP status (0: no answer or timeout)", ["status"])
INVALID = Counter("knd_publisher_invalid_slices",
                  "ResourceSlice writes the API server refused as invalid (422)")
SYNCS = Counter("knd_publisher_syncs", "Pool synchronisations, by result", ["result"])
LAST_PUBLISH = Gauge("knd_publisher_last_publish_timestamp_seconds",
                     "Unix time of the last successful pool synchronisation")
PUBLISHED_DEVICES = Gauge("knd_publisher_published_devices",
                          "Devices published in the node's pool")
RDMA_DEVICES = Gauge("knd_publisher_rdma_devices",
                     "Published devices with the <driver>/rdma attribute true")
GENERATION = Gauge("knd_publisher_pool_generation", "Generation of the node's pool")
EVENTS_WRITTEN = Counter("knd_publisher_events_written",
                         "Kubernetes Events, by reason and result: created, patched (the same "
                         "event again: count bumped), spam (dropped by the rate limit), error "
                         "(the API refused it or did not answer), dropped (the queue was "
                         "full), invalid, no-object (the pod's name is not known)",
                         ["reason", "result"])
