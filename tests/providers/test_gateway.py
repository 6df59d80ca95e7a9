"""A claim's ``profile`` survives the gateway's class/claim merge on its way to the plumber."""

from __future__ import annotations

from services.kubelet_gateway.claims import claim_requests
from tests.claims.test_gateway_claims import UID, make_claim, opaque, result


def test_a_claims_profile_reaches_the_plumber_through_the_gateway_merge() -> None:
    claim = make_claim([result("nic", "eth1")], [
        opaque({"profile": "acme.com/class"}, source="FromClass"),
        opaque({"profile": "acme.com/blue", "interface": {"mtu": 9000}})])
    [req] = claim_requests(claim, driver="knd.dev", uid=UID)
    assert req.config is not None
    assert (req.config.profile, req.config.interface.mtu) == ("acme.com/blue", 9000)
