"""The event recorder: client-go's correlation (dedupe, aggregation, spam filter) on a
fake clock, and a recorder that never lets an API failure reach its caller."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest
from prometheus_client import REGISTRY

from services.common.api.files import FileApi
from services.common.api.port import ApiError
from services.publisher.events import (
    COMBINED,
    MAX_MESSAGE,
    Correlator,
    EventRecorder,
    Involved,
    Lru,
    Occurrence,
    checked,
)

POD = Involved("Pod", "team-a", "web-0", "uid-web-0")
OTHER = Involved("Pod", "team-a", "web-1", "uid-web-1")


class Clock:
    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def occ(message: str = "boom", reason: str = "NetworkDeviceAttachFailed",
        obj: Involved = POD, type: str = "Warning") -> Occurrence:
    return checked(Occurrence(obj, type, reason, message))


def written(reason: str, result: str) -> float:
    return REGISTRY.get_sample_value("knd_publisher_events_written_total",
                                     {"reason": reason, "result": result}) or 0.0


def test_first_event_is_a_create_shaped_as_client_go_writes_it():
    clock = Clock()
    c = Correlator("knd.dev", "node-a", clock=clock)
    w = c.correlate(occ())
    assert w is not None and w.patch is None
    ev = w.event
    assert ev["involvedObject"] == {"apiVersion": "v1", "kind": "Pod", "namespace": "team-a",
                                    "name": "web-0", "uid": "uid-web-0"}
    assert ev["metadata"]["namespace"] == "team-a"
    assert ev["metadata"]["name"] == f"web-0.{int(clock.t * 1e9):x}"
    assert ev["source"] == {"component": "knd.dev", "host": "node-a"}
    assert (ev["type"], ev["reason"], ev["message"], ev["count"]) == \
        ("Warning", "NetworkDeviceAttachFailed", "boom", 1)
    assert ev["firstTimestamp"] == ev["lastTimestamp"] == "2027-01-15T08:00:00Z"
    claim = c.correlate(occ(obj=Involved("ResourceClaim", "team-a", "c", "u"),
                            reason="ClaimPrepareFailed"))
    assert claim is not None
    assert claim.event["involvedObject"]["apiVersion"] == "resource.k8s.io/v1"


def test_the_same_event_again_bumps_count_and_last_timestamp():
    clock = Clock()
    c = Correlator("knd.dev", "node-a", clock=clock)
    first = c.correlate(occ())
    clock.t += 42
    again = c.correlate(occ())
    assert first is not None and again is not None
    assert again.event["metadata"]["name"] == first.event["metadata"]["name"]
    assert again.patch == {"count": 2, "lastTimestamp": "2027-01-15T08:00:42Z",
                           "message": "boom"}
    assert again.event["firstTimestamp"] == first.event["firstTimestamp"]
    # another message, reason, type or object is another event
    for other in (occ("bang"), occ(reason="RDMADeviceAttachFailed"), occ(type="Normal"),
                  occ(obj=OTHER)):
        w = c.correlate(other)
        assert w is not None and w.patch is None
        assert w.event["metadata"]["name"] != first.event["metadata"]["name"]


def test_names_are_unique_on_a_stopped_clock():
    c = Correlator("knd.dev", "node-a", clock=Clock())
    names = set()
    for i in range(5):
        w = c.correlate(occ(f"m{i}"))
        assert w is not None
        names.add(w.event["metadata"]["name"])
    assert len(names) == 5


def test_the_tenth_similar_message_is_combined_into_one_event():
    clock = Clock()
    c = Correlator("knd.dev", "node-a", clock=clock)
    writes = []
    for i in range(12):
        clock.t += 1
        w = c.correlate(occ(f"failure {i}"))
        assert w is not None
        writes.append(w)
    assert [w.event["message"] for w in writes[:9]] == [f"failure {i}" for i in range(9)]
    assert all(w.patch is None for w in writes[:9])
    combined = writes[9:]
    assert [w.event["message"] for w in combined] == [COMBINED + f"failure {i}"
                                                       for i in (9, 10, 11)]
    assert combined[0].patch is None and combined[0].event["count"] == 1
    assert {w.event["metadata"]["name"] for w in combined} == \
        {combined[0].event["metadata"]["name"]}
    assert [w.patch["count"] for w in combined[1:] if w.patch] == [2, 3]
    # a quiet window starts over: separate events again
    clock.t += 601
    w = c.correlate(occ("failure 99"))
    assert w is not None and w.event["message"] == "failure 99" and w.patch is None


def test_spam_filter_is_a_token_bucket_per_object():
    clock = Clock()
    c = Correlator("knd.dev", "node-a", clock=clock)
    results = [c.correlate(occ("same")) for _ in range(30)]
    assert sum(w is not None for w in results) == 25
    assert all(w is not None for w in results[:25])
    # another object has a bucket of its own
    assert c.correlate(occ("same", obj=OTHER)) is not None
    clock.t += 299
    assert c.correlate(occ("same")) is None
    clock.t += 1  # one token back after 5 minutes
    back = c.correlate(occ("same"))
    assert back is not None
    # the dropped ones were still counted, as client-go counts them
    assert back.patch is not None and back.patch["count"] == 32
    assert c.correlate(occ("same")) is None


def test_memory_is_bounded_by_the_lru():
    lru: Lru[int] = Lru(3)
    for i in range(5):
        lru.put(i, i)
    assert len(lru) == 3 and lru.get(0) is None and lru.get(4) == 4
    lru.get(2)  # used: kept over 3
    lru.put(5, 5)
    assert lru.get(2) == 2 and lru.get(3) is None
    c = Correlator("knd.dev", "node-a", clock=Clock(), max_keys=8)
    for i in range(100):
        c.correlate(occ(obj=Involved("Pod", "ns", f"p{i}", f"u{i}")))
    assert len(c._written) == len(c._similar) == len(c._buckets) == 8


@pytest.mark.parametrize(("change", "field"), [
    ({"kind": "Node"}, "kind"),
    ({"namespace": ""}, "namespace"),
    ({"namespace": "Team_A"}, "namespace"),
    ({"name": "web 0"}, "name"),
    ({"uid": ""}, "uid"),
    ({"type": "Error"}, "type"),
    ({"reason": ""}, "reason"),
    ({"reason": "not camel"}, "reason"),
    ({"reason": "A" * 129}, "reason"),
])
def test_bad_input_is_refused_naming_the_field(change, field):
    fields = {"kind": "Pod", "namespace": "ns", "name": "p", "uid": "u", "type": "Warning",
              "reason": "NetworkDeviceAttachFailed"}
    fields.update(change)
    obj = Involved(fields["kind"], fields["namespace"], fields["name"], fields["uid"])
    with pytest.raises(ValueError, match=rf"^{field}: "):
        checked(Occurrence(obj, fields["type"], fields["reason"], "m"))


def test_message_is_one_line_and_at_most_1024_bytes():
    assert checked(Occurrence(POD, "Warning", "R", "a\nb\x00c")).message == "a\\nb\\x00c"
    long = checked(Occurrence(POD, "Warning", "R", "é" * 2000)).message
    assert len(long.encode()) <= MAX_MESSAGE and long.endswith("...")
    assert checked(Occurrence(POD, "Warning", "R", "x" * 1024)).message == "x" * 1024


class RefusingApi:
    """Every event write fails as the API server's refusal or absence would."""

    def __init__(self, exc: Exception) -> None:
        self.exc = exc
        self.calls = 0

    async def create_event(self, obj: dict) -> dict:
        self.calls += 1
        raise self.exc

    async def patch_event(self, namespace: str, name: str, patch: dict) -> dict:
        self.calls += 1
        raise self.exc


class HangingApi:
    async def create_event(self, obj: dict) -> dict:
        await anyio.sleep(3600)
        return obj


@pytest.mark.anyio
@pytest.mark.parametrize("exc", [ApiError("forbidden", 403), ApiError("no answer", 0),
                                 RuntimeError("a bug in the port")])
async def test_a_refused_event_is_counted_not_raised(exc, caplog):
    api = RefusingApi(exc)
    rec = EventRecorder(api, "knd.dev", "node-a", clock=Clock())  # type: ignore[arg-type]
    before = written("ReasonRefused", "error")
    assert await rec.write(occ(reason="ReasonRefused")) == "error"
    assert written("ReasonRefused", "error") == before + 1
    assert api.calls == 1 and "not written" in caplog.text


@pytest.mark.anyio
async def test_a_hanging_api_is_cut_off():
    rec = EventRecorder(HangingApi(), "knd.dev", "node-a",  # type: ignore[arg-type]
                        call_timeout=0.05)
    with anyio.fail_after(5):
        assert await rec.write(occ(reason="ReasonHanging")) == "error"


@pytest.mark.anyio
async def test_record_never_waits_and_drops_beyond_the_queue(tmp_path: Path):
    rec = EventRecorder(FileApi(tmp_path), "knd.dev", "node-a", queue=2)
    before = written("ReasonQueued", "dropped")
    assert rec.record(occ("1", reason="ReasonQueued"))
    assert rec.record(occ("2", reason="ReasonQueued"))
    assert not rec.record(occ("3", reason="ReasonQueued"))  # nobody writes yet: full
    assert written("ReasonQueued", "dropped") == before + 1
    bad = Occurrence(POD, "Warning", "bad reason", "m")
    invalid = written("bad reason", "invalid")
    assert not rec.record(bad)
    assert written("bad reason", "invalid") == invalid + 1
    async with anyio.create_task_group() as tg:
        tg.start_soon(rec.run)
        folder = tmp_path / "api" / "events" / "team-a"
        with anyio.fail_after(10):
            while len(list(folder.glob("*.json"))) < 2:
                await anyio.sleep(0.01)
        tg.cancel_scope.cancel()
    messages = sorted(json.loads(p.read_text())["message"] for p in folder.glob("*.json"))
    assert messages == ["1", "2"]


@pytest.mark.anyio
async def test_an_expired_event_is_written_again_with_its_count(tmp_path: Path):
    api = FileApi(tmp_path)
    clock = Clock()
    rec = EventRecorder(api, "knd.dev", "node-a", clock=clock)
    assert await rec.write(occ(reason="ReasonExpired")) == "created"
    assert await rec.write(occ(reason="ReasonExpired")) == "patched"
    (path,) = (tmp_path / "api" / "events" / "team-a").glob("*.json")
    assert json.loads(path.read_text())["count"] == 2
    path.unlink()  # the API server's TTL
    assert await rec.write(occ(reason="ReasonExpired")) == "created"
    assert json.loads(path.read_text())["count"] == 3
