"""Amazon EC2: detection and the instance identity through IMDSv2.

DRANET's only AWS attributes are the EFA device groups of Trainium/Inferentia
instances, read through AWS's Neuron lookup library, which has no Python
equivalent here: knd recognises EC2 (so auto-detection stops here and says so)
and publishes no AWS attributes.
"""

from __future__ import annotations

from services.providers.base import StaticInstance
from services.providers.http import Client, ProviderError

DEFAULT_URL = "http://169.254.169.254"
TOKEN_TTL = "21600"
IDENTITY = "/latest/dynamic/instance-identity/document"


async def _token(client: Client) -> dict[str, str]:
    token = await client.text("PUT", "/latest/api/token",
                              headers={"X-aws-ec2-metadata-token-ttl-seconds": TOKEN_TTL})
    return {"X-aws-ec2-metadata-token": token}


async def detect(client: Client) -> bool:
    status, _ = await client.request("GET", IDENTITY, headers=await _token(client))
    return status == 200


class AwsInstance(StaticInstance):
    def __init__(self, instance_type: str) -> None:
        self.name = "AWS"
        self.instance_type = instance_type


async def fetch(client: Client) -> AwsInstance:
    doc = await client.json("GET", IDENTITY, headers=await _token(client))
    if not isinstance(doc, dict):
        raise ProviderError(client.name, "instance identity: expected an object")
    return AwsInstance(str(doc.get("instanceType") or ""))
