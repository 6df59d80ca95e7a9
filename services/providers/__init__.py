"""Providers: facts and configuration from outside the node's kernel.

A cloud's instance metadata (GCE, AWS, Azure, OKE, Alibaba) or a webhook adds
attributes to the published devices (discovery) and baseline or profile
configuration to a claim before anything is applied (the plumber's prepare).
Flags as DRANET's: ``--cloud-provider-hint``, ``--profile-provider``,
``--webhook-url``; the metadata address is a flag too so tests can serve their own.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

from services.providers.target import Target

HINTS = ("AWS", "GCE", "AZURE", "OKE", "ALIBABA", "webhook", "NONE")
PROFILE_PROVIDERS = ("cloud", "webhook", "none")


def _hint(text: str) -> str:
    """DRANET's spellings; also accepted in any case (``gce``, ``WEBHOOK``, ``none``)."""
    if not text:
        return ""
    for hint in HINTS:
        if text.lower() == hint.lower():
            return hint
    raise argparse.ArgumentTypeError(
        f"{text!r}: expected one of {', '.join(HINTS)} (unset: detect the cloud)")


def _profile(text: str) -> str:
    if text.lower() not in PROFILE_PROVIDERS:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected one of {', '.join(PROFILE_PROVIDERS)}")
    return text.lower()


def _url(text: str) -> str:
    if not text:
        return ""
    try:
        Target.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 600:
        raise argparse.ArgumentTypeError(f"{text!r}: expected seconds, more than 0, at most 600")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The provider flags, shared by ``knd up``, discovery and the plumber."""
    env = os.environ.get
    p.add_argument("--cloud-provider-hint", type=_hint,
                   default=env("KND_CLOUD_PROVIDER_HINT", ""),
                   help=f"where device attributes and baseline configs come from: "
                        f"{', '.join(HINTS)}; unset: detect the cloud from its metadata "
                        "service [KND_CLOUD_PROVIDER_HINT]")
    p.add_argument("--profile-provider", type=_profile,
                   default=env("KND_PROFILE_PROVIDER", "cloud"),
                   help="who resolves a claim's `profile`: cloud (the cloud provider's, "
                        "if it has one), webhook or none (default cloud) "
                        "[KND_PROFILE_PROVIDER]")
    p.add_argument("--webhook-url", type=_url, default=env("KND_WEBHOOK_URL", ""),
                   help="the webhook provider: http://host:port, https://host:port or "
                        "unix:///path [KND_WEBHOOK_URL]")
    p.add_argument("--webhook-timeout", type=_seconds,
                   default=env("KND_WEBHOOK_TIMEOUT", "10"),
                   help="seconds one webhook request may take (default 10) "
                        "[KND_WEBHOOK_TIMEOUT]")
    p.add_argument("--metadata-url", type=_url, default=env("KND_METADATA_URL", ""),
                   help="the cloud metadata service's address instead of the cloud's own "
                        "(169.254.169.254, metadata.google.internal, 100.100.100.200) "
                        "[KND_METADATA_URL]")
    p.add_argument("--metadata-timeout", type=_seconds,
                   default=env("KND_METADATA_TIMEOUT", "5"),
                   help="seconds to detect the cloud (its metadata is then read for up to "
                        "three times as long) (default 5) [KND_METADATA_TIMEOUT]")


def check(args: argparse.Namespace) -> str | None:
    """Why the provider flags cannot work together, or None."""
    hint = getattr(args, "cloud_provider_hint", None)
    if hint is None:
        return None
    if not args.webhook_url and hint == "webhook":
        return "argument --cloud-provider-hint: webhook needs --webhook-url"
    if not args.webhook_url and args.profile_provider == "webhook":
        return "argument --profile-provider: webhook needs --webhook-url"
    return None


@dataclass(frozen=True)
class Settings:
    hint: str = "NONE"
    profile: str = "cloud"
    webhook_url: str = ""
    webhook_timeout: float = 10.0
    metadata_url: str = ""
    metadata_timeout: float = 5.0
    sysfs_root: str = "/sys"

    @classmethod
    def from_args(cls, a: argparse.Namespace) -> Settings:
        return cls(hint=a.cloud_provider_hint, profile=a.profile_provider,
                   webhook_url=a.webhook_url, webhook_timeout=a.webhook_timeout,
                   metadata_url=a.metadata_url, metadata_timeout=a.metadata_timeout,
                   sysfs_root=getattr(a, "sysfs_root", "/sys") or "/sys")

    def env(self) -> dict[str, str]:
        """As ``KND_*`` variables, for ``knd up``'s children."""
        return {"KND_CLOUD_PROVIDER_HINT": self.hint, "KND_PROFILE_PROVIDER": self.profile,
                "KND_WEBHOOK_URL": self.webhook_url,
                "KND_WEBHOOK_TIMEOUT": f"{self.webhook_timeout:g}",
                "KND_METADATA_URL": self.metadata_url,
                "KND_METADATA_TIMEOUT": f"{self.metadata_timeout:g}"}
