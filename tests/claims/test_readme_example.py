"""The README's claim configuration example stays valid."""

from __future__ import annotations

from pathlib import Path

import yaml

from schemas.netconfig import decode_config

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_claim_config_example_is_valid():
    block = README.read_text().split("```yaml", 1)[1].split("```", 1)[0]
    params = yaml.safe_load(block)["config"][0]["opaque"]["parameters"]
    cfg = decode_config(params)
    assert cfg.interface.name == "net1" and cfg.sysctls == {"ipv4.arp_ignore": "1"}
