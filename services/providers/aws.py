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
IDENTITY = "/latest/dynamic/instance-identity/document"
TOKEN_HEADER = "X-aws-ec2-metadata-token"


async def detect(client: Client) -> bool:
    token = await client.session_token(TOKEN_HEADER)
    status, _ = await client.request("GET", IDENTITY, headers=token)
    return status == 200


class AwsInstance(StaticInstance):
    def __init__(self, instance_type: str) -> None:
        self.name = "AWS"
        self.instance_type = instance_type


async def fetch(client: Client) -> AwsInstance:
    doc = await client.json("GET", IDENTITY, headers=await client.session_token(TOKEN_HEADER))
    if not isinstance(doc, dict):
        raise ProviderError(client.name, "instance identity: expected an object")
    return AwsInstance(str(doc.get("instanceType") or ""))
