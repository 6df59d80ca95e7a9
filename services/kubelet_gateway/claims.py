"""Reading a ResourceClaim as the API serves it: this driver's devices and their config.

The kubelet sends a claim's namespace, name and UID; the gateway reads the
claim (``resource.k8s.io/v1``) and turns it into the plumber's
:class:`~schemas.plumber.DeviceRequest` list with :func:`claim_requests`, and
the pods it is reserved for with :func:`claim_pods`.

Which configuration applies to a result: the entries of
``status.allocation.devices.config[]`` (the scheduler's copy, taken at
allocation time, of the class configs and ``spec.devices.config``; the spec is
not read) that are opaque, name this driver, and either list no request (all
requests) or list the result's request: exactly, or its parent request for a
subrequest result (config ``nic`` applies to result ``nic/fast``). They are
merged class configs first, then claim configs, each group in list order, so
the claim overrides its class (see :func:`schemas.netconfig.merge`).
"""

from __future__ import annotations

from typing import Any

from schemas.netconfig import ConfigError, NetworkConfig, decode_config, merge, validate
from schemas.plumber import DeviceRequest, PodRef

MAX_RESULTS = 32
MAX_CONFIGS = 64
SOURCES = ("FromClass", "FromClaim")
"""``source`` values of allocation configs, in the order they are merged."""

RESULTS = "status.allocation.devices.results"
CONFIGS = "status.allocation.devices.config"


class ClaimError(ValueError):
    """The claim cannot be prepared; the message names the claim and the field."""


def _name(claim: dict) -> str:
    meta = claim.get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _list(claim: dict, value: Any, path: str, limit: int) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ClaimError(f"claim {_name(claim)}: {path}: expected a list")
    if len(value) > limit:
        raise ClaimError(f"claim {_name(claim)}: {path}: {len(value)} entries, more than the "
                         f"{limit} the API allows")
    return value


def _applies(requests: list[str], request: str) -> bool:
    """Whether a config listing ``requests`` applies to the result of ``request``."""
    if not requests:
        return True
    parent = request.split("/", 1)[0]
    return request in requests or parent in requests


def claim_requests(claim: dict, *, driver: str, uid: str) -> list[DeviceRequest]:
    """This driver's allocated devices of ``claim``, each with its merged configuration.

    Raises :class:`ClaimError` when the claim is not the one kubelet meant (UID),
    is not allocated, is over the API's limits, or when a configuration of this
    driver is invalid (the message names the field path, e.g.
    ``status.allocation.devices.config[2].opaque.parameters.interface.mtu``).
    """
    name = _name(claim)
    meta = _dict(claim.get("metadata"))
    if meta.get("uid") != uid:
        raise ClaimError(f"claim {name}: UID {meta.get('uid')} differs from the UID kubelet "
                         f"sent ({uid}): the claim was replaced")
    allocation = _dict(claim.get("status")).get("allocation")
    if not isinstance(allocation, dict):
        raise ClaimError(f"claim {name}: not allocated")
    devices = _dict(allocation.get("devices"))
    results = _list(claim, devices.get("results"), RESULTS, MAX_RESULTS)
    configs = _list(claim, devices.get("config"), CONFIGS, MAX_CONFIGS)

    # Decode every opaque config of this driver once, even one no result uses:
    # it was written for us, and an invalid one is a mistake to report.
    ours: list[tuple[int, list[str], NetworkConfig]] = []
    for j, entry in enumerate(configs):
        where = f"{CONFIGS}[{j}]"
        if not isinstance(entry, dict):
            raise ClaimError(f"claim {name}: {where}: expected an object")
        opaque = entry.get("opaque")
        if not isinstance(opaque, dict) or opaque.get("driver") != driver:
            continue
        source = entry.get("source")
        if source not in SOURCES:
            raise ClaimError(f"claim {name}: {where}.source: {source!r} is not one of "
                             f"{', '.join(SOURCES)}")
        requests = entry.get("requests") or []
        if not isinstance(requests, list) or not all(isinstance(r, str) for r in requests):
            raise ClaimError(f"claim {name}: {where}.requests: expected a list of names")
        if "parameters" not in opaque:
            raise ClaimError(f"claim {name}: {where}.opaque.parameters: required")
        try:
            cfg = decode_config(opaque["parameters"], f"{where}.opaque.parameters")
        except ConfigError as exc:
            raise ClaimError(f"claim {name}: {exc}") from None
        ours.append((SOURCES.index(source), requests, cfg))
    ours.sort(key=lambda item: item[0])  # stable: list order kept within a source

    out: list[DeviceRequest] = []
    for i, result in enumerate(results):
        where = f"{RESULTS}[{i}]"
        if not isinstance(result, dict):
            raise ClaimError(f"claim {name}: {where}: expected an object")
        if result.get("driver") != driver:
            continue
        for field in ("request", "pool", "device"):
            if not isinstance(result.get(field), str) or not result[field]:
                raise ClaimError(f"claim {name}: {where}.{field}: required")
        share_id = result.get("shareID") or ""
        if not isinstance(share_id, str):
            raise ClaimError(f"claim {name}: {where}.shareID: expected a string")
        applied = [cfg for _, requests, cfg in ours if _applies(requests, result["request"])]
        config = None
        if applied:
            config = merge(applied)
            problems = validate(config)
            if problems:
                raise ClaimError(f"claim {name}: {where} (request {result['request']}): the "
                                 f"merged configuration is invalid: {'; '.join(problems)}")
        out.append(DeviceRequest(request=result["request"], pool=result["pool"],
                                 device=result["device"], share_id=share_id, config=config))
    return out


def claim_pods(claim: dict) -> list[PodRef]:
    """The pods ``status.reservedFor`` lists (other consumer kinds are left out)."""
    namespace = _dict(claim.get("metadata")).get("namespace") or ""
    pods = []
    for ref in _dict(claim.get("status")).get("reservedFor") or []:
        if not isinstance(ref, dict) or ref.get("resource") != "pods" \
                or ref.get("apiGroup") not in (None, "") or not ref.get("uid"):
            continue
        pods.append(PodRef(uid=str(ref["uid"]), namespace=namespace,
                           name=str(ref.get("name") or "")))
    return pods
