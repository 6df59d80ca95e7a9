"""Providers: facts and configuration from outside the node's kernel.

A cloud's instance metadata (GCE, AWS, Azure, OKE, Alibaba) or a webhook adds
attributes to the published devices (discovery) and baseline or profile
configuration to a claim before anything is applied (the plumber's prepare).
Flags as DRANET's: ``--cloud-provider-hint``, ``--profile-provider``,
``--webhook-url``; the metadata address is a flag too so tests can serve their own
(all in services.common.settings; the checks of their values are here).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from services.providers.target import Target

HINTS = ("AWS", "GCE", "AZURE", "OKE", "ALIBABA", "webhook", "NONE")
PROFILE_PROVIDERS = ("cloud", "webhook", "none")


def hint(text: str) -> str:
    """DRANET's spellings; also accepted in any case (``gce``, ``WEBHOOK``, ``none``)."""
    if not text:
        return ""
    for hint in HINTS:
        if text.lower() == hint.lower():
            return hint
    raise argparse.ArgumentTypeError(
        f"{text!r}: expected one of {', '.join(HINTS)} (unset: detect the cloud)")


def profile(text: str) -> str:
    if text.lower() not in PROFILE_PROVIDERS:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected one of {', '.join(PROFILE_PROVIDERS)}")
    return text.lower()


def url(text: str) -> str:
    if not text:
        return ""
    try:
        Target.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


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
