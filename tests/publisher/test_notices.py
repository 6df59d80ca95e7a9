"""Which bus events become which Kubernetes Events (reason, object, wording)."""

from __future__ import annotations

import pytest

from schemas import events as reasons
from schemas.events import ClaimPrepared
from schemas.plumber import DeviceDetached, DeviceFailed
from services.publisher.events import Involved
from services.publisher.notices import (
    from_claim_prepared,
    from_device_detached,
    from_device_failed,
)

POD = {"pod_uid": "u", "pod_namespace": "ns", "pod_name": "p"}


def failed(step: str, rolled_back: bool = True) -> DeviceFailed:
    return DeviceFailed(node="n", claim_uid="c", device="eth1", step=step, error="E",
                        rolled_back=rolled_back, **POD)


@pytest.mark.parametrize(("step", "reason"), [
    ("move", reasons.ATTACH_FAILED), ("config.routes[0]", reasons.ATTACH_FAILED),
    ("deadline", reasons.ATTACH_FAILED), ("attach", reasons.ATTACH_FAILED),
    ("create", reasons.CREATE_FAILED), ("create.mtu", reasons.CREATE_FAILED),
    ("creative", reasons.ATTACH_FAILED),
    ("rdma", reasons.RDMA_FAILED), ("restore", reasons.RESTORE_FAILED),
])
def test_the_step_picks_the_reason(step: str, reason: str) -> None:
    occ = from_device_failed(failed(step))
    assert occ.reason == reason and occ.type == "Warning"
    assert occ.obj == Involved("Pod", "ns", "p", "u")
    assert "eth1" in occ.message and "ns/p" in occ.message and "E" in occ.message


def test_an_incomplete_rollback_is_said() -> None:
    assert "rollback is incomplete" in from_device_failed(failed("move", False)).message
    assert "rollback" not in from_device_failed(failed("move")).message
    # an RDMA failure is not rolled back at all: not an incomplete rollback
    assert "rollback" not in from_device_failed(failed("rdma", False)).message


def test_only_a_device_lost_to_the_node_is_told() -> None:
    def detached(reason: str, gone: bool) -> DeviceDetached:
        return DeviceDetached(node="n", claim_uid="c", device="veth1", interface="",
                              reason=reason, gone=gone, **POD)

    lost = from_device_detached(detached("device-deleted", True))
    assert lost is not None and lost.reason == reasons.RESTORE_FAILED
    assert "deleted inside pod ns/p" in lost.message
    for reason, gone in (("netns-gone", True), ("detach", False), ("netns-gone", False)):
        assert from_device_detached(detached(reason, gone)) is None


def test_a_failed_prepare_is_told_on_the_claim() -> None:
    ok = ClaimPrepared(node="n", claim_uid="c", namespace="ns", name="claim", devices=["a"])
    assert from_claim_prepared(ok) is None
    occ = from_claim_prepared(ClaimPrepared(node="n", claim_uid="c", namespace="ns",
                                            name="claim", error="no such device"))
    assert occ is not None
    assert (occ.obj, occ.reason, occ.message) == (
        Involved("ResourceClaim", "ns", "claim", "c"), reasons.CLAIM_PREPARE_FAILED,
        "no such device")
