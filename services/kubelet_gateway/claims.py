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

import msgspec

from schemas.netconfig import ConfigError, NetworkConfig, decode_config, merge, validate
from schemas.plumber import DeviceRequest, PodRef
from schemas.text import one_line, q
from services.common.api import decode

MAX_RESULTS = 32
MAX_CONFIGS = 64
SOURCES = ("FromClass", "FromClaim")
"""``source`` values of allocation configs, in the order they are merged."""

DEVICES = "status.allocation.devices"
RESULTS = f"{DEVICES}.results"
CONFIGS = f"{DEVICES}.config"
NAME_LIMIT = 160
"""Characters of a claim's namespace/name echoed in a message (a valid one is shorter)."""


class ClaimError(ValueError):
    """The claim cannot be prepared; the message names the claim and the field."""


def _identity(claim: dict) -> tuple[str, str]:
    """The claim's ``namespace/name`` (escaped and cut, for messages) and UID. Raises
    :class:`~services.common.api.decode.ObjectError` when ``metadata`` is malformed."""
    meta = decode.metadata(claim, "namespace", "name", "uid")
    return one_line(f"{meta['namespace']}/{meta['name']}", NAME_LIMIT), meta["uid"]


def _list(container: dict, key: str, path: str, limit: int) -> list:
    value = decode.field(container, key, list, path) or []
    if len(value) > limit:
        raise decode.ObjectError(f"{decode.join(path, key)}: {len(value)} entries, more than "
                                 f"the {limit} the API allows")
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
    is not allocated, is over the API's limits, is malformed (a field of the wrong
    type), or when a configuration of this driver is invalid (the message names the
    field path, e.g. ``status.allocation.devices.config[2].opaque.parameters.interface.
    mtu``); :class:`~services.common.api.decode.ObjectError` when even its ``metadata``
    cannot be read.
    """
    name, claim_uid = _identity(claim)
    if claim_uid != uid:
        raise ClaimError(f"claim {name}: UID {one_line(claim_uid, 80)} differs from the UID "
                         f"kubelet sent ({one_line(uid, 80)}): the claim was replaced")
    try:
        return _requests(claim, name, driver)
    except decode.ObjectError as exc:
        raise ClaimError(f"claim {name}: {exc}") from None


def _requests(claim: dict, name: str, driver: str) -> list[DeviceRequest]:
    status = decode.field(claim, "status", dict, "") or {}
    allocation = decode.field(status, "allocation", dict, "status")
    if allocation is None:
        raise ClaimError(f"claim {name}: not allocated")
    devices = decode.field(allocation, "devices", dict, "status.allocation") or {}
    results = _list(devices, "results", DEVICES, MAX_RESULTS)
    configs = _list(devices, "config", DEVICES, MAX_CONFIGS)

    # Decode every opaque config of this driver once, even one no result uses:
    # it was written for us, and an invalid one is a mistake to report.
    ours: list[tuple[int, list[str], NetworkConfig]] = []
    for j, entry in enumerate(configs):
        where = f"{CONFIGS}[{j}]"
        decode.expect(entry, dict, where)
        opaque = decode.field(entry, "opaque", dict, where)
        if opaque is None or opaque.get("driver") != driver:
            continue
        source = entry.get("source")
        if source not in SOURCES:
            raise ClaimError(f"claim {name}: {where}.source: {q(source)} is not one of "
                             f"{', '.join(SOURCES)}")
        requests = decode.field(entry, "requests", list, where) or []
        for k, request in enumerate(requests):
            decode.expect(request, str, f"{where}.requests[{k}]")
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
        decode.expect(result, dict, where)
        if result.get("driver") != driver:
            continue
        for key in ("request", "pool", "device"):
            if not decode.field(result, key, str, where, required=True):
                raise ClaimError(f"claim {name}: {where}.{key}: required")
        share_id = decode.field(result, "shareID", str, where) or ""
        applied = [cfg for _, requests, cfg in ours if _applies(requests, result["request"])]
        config = None
        if applied:
            config = _with_profile(merge(applied), applied)
            problems = validate(config)
            if problems:
                request = one_line(result["request"], 80)
                raise ClaimError(f"claim {name}: {where} (request {request}): the merged "
                                 f"configuration is invalid: {'; '.join(problems)}")
        out.append(DeviceRequest(request=result["request"], pool=result["pool"],
                                 device=result["device"], share_id=share_id, config=config))
    return out


def _with_profile(config: NetworkConfig, applied: list[NetworkConfig]) -> NetworkConfig:
    """The last ``profile`` set wins, as any scalar field does, even where the merge
    leaves it out: the plumber asks the profile provider for it at prepare."""
    profile = next((c.profile for c in reversed(applied) if c.profile), "")
    if profile and config.profile != profile:
        config = msgspec.structs.replace(config, profile=profile)
    return config


def claim_pods(claim: dict) -> list[PodRef]:
    """The pods ``status.reservedFor`` lists (other consumer kinds are left out). Raises
    :class:`~services.common.api.decode.ObjectError` on a malformed list."""
    namespace = decode.metadata(claim, "namespace")["namespace"]
    status = decode.field(claim, "status", dict, "") or {}
    pods = []
    for i, ref in enumerate(decode.field(status, "reservedFor", list, "status") or []):
        where = f"status.reservedFor[{i}]"
        decode.expect(ref, dict, where)
        if ref.get("resource") != "pods" or ref.get("apiGroup") not in (None, "") \
                or not ref.get("uid"):
            continue
        pods.append(PodRef(uid=decode.expect(ref["uid"], str, f"{where}.uid"),
                           namespace=namespace,
                           name=decode.field(ref, "name", str, where) or ""))
    return pods
