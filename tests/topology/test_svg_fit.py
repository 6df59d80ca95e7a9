"""Every line of text of ``knd topology --svg`` fits in the picture: the title of a
512 px wide picture was cut off. Widths are estimated with DejaVu Sans's advances
(services.topology.textfit), which are wider than the usual sans-serif fonts'."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest

from services.topology import render, textfit
from services.topology.affinity import Affinity
from tests.helpers.sysfs_tree import (
    SysfsTree,
    gpu_server,
    nested_switch_server,
    odd_entries,
    shared_switch_server,
)

SVG = "{http://www.w3.org/2000/svg}"
Analyse = Callable[..., Affinity]


def one_gpu_one_nic(root: Path) -> SysfsTree:
    """The narrowest picture: one switch column, so the picture's minimum width."""
    tree = SysfsTree(root)
    switch = ["0000:00:01.0", "0000:01:00.0"]
    tree.gpu("0000:03:00.0", root="pci0000:00", bridges=[*switch, "0000:02:00.0"])
    tree.pci_nic("0000:04:00.0", root="pci0000:00", bridges=[*switch, "0000:02:01.0"],
                 ifname="ens1f0np0", rdma="mlx5_0")
    return tree


def overflowing(svg: str) -> list[str]:
    """Each <text> that ends right of the picture, or lies below it."""
    picture = ET.fromstring(svg)
    width, height = float(picture.get("width", 0)), float(picture.get("height", 0))
    bad = []
    for t in picture.iter(f"{SVG}text"):
        size = float(t.get("font-size", 0))
        right = float(t.get("x", 0)) + textfit.width(t.text or "", size,
                                                     t.get("font-weight") == "bold")
        if right > width or float(t.get("y", 0)) > height:
            bad.append(f"{t.text!r} ends at {right:.0f} of {width:.0f}")
    return bad


def title_lines(svg: str) -> list[str]:
    picture = ET.fromstring(svg)
    return [t.text or "" for t in picture.iter(f"{SVG}text")
            if t.get("font-size") == str(render.TITLE_SIZE)]


def test_the_title_of_a_narrow_picture_wraps_inside_it(tmp_path: Path,
                                                       analyse: Analyse) -> None:
    aff = analyse(one_gpu_one_nic(tmp_path / "sys").root)
    svg = render.to_svg(aff)
    width = float(ET.fromstring(svg).get("width", 0))
    assert width == 512
    # on one line it would not fit: this is the picture that cut it off
    assert textfit.width(render.title_text(aff), render.TITLE_SIZE, bold=True) > width
    lines = title_lines(svg)
    assert len(lines) > 1 and " ".join(lines) == render.title_text(aff)
    assert overflowing(svg) == []


@pytest.mark.parametrize("make", [gpu_server, shared_switch_server, nested_switch_server,
                                  odd_entries, one_gpu_one_nic])
def test_no_text_is_wider_than_the_picture(tmp_path: Path, analyse: Analyse, make) -> None:
    root = make(tmp_path / "sys").root
    for vendors in (None, ["10de", "1002", "1a03"]):
        assert overflowing(render.to_svg(analyse(root, gpu_vendors=vendors))) == []


def test_a_long_interface_name_is_cut_to_its_box(tmp_path: Path, analyse: Analyse) -> None:
    tree = SysfsTree(tmp_path / "sys")
    tree.gpu("0000:03:00.0", root="pci0000:00", bridges=["0000:00:01.0"])
    tree.pci_nic("0000:04:00.0", root="pci0000:00", bridges=["0000:00:02.0"],
                 ifname=["enp4s0f0np0", "enp4s0f1np1"], rdma="mlx5_bond_0")
    svg = render.to_svg(analyse(tree.root))
    label = next(t.text for t in ET.fromstring(svg).iter(f"{SVG}text")
                 if (t.text or "").startswith("enp4s0f0np0/"))
    assert label.endswith("~")
    assert textfit.width(label, 10) <= render.NODE_W - 12
    assert overflowing(svg) == []


def test_wrap_keeps_every_word_and_cuts_only_what_cannot_fit() -> None:
    text = "lines join each GPU to its preferred NIC (dashed: shared)"
    lines = textfit.wrap(text, 13, 150, bold=True)
    assert " ".join(lines) == text and len(lines) > 2
    assert all(textfit.width(line, 13, bold=True) <= 150 for line in lines)
    long = textfit.wrap("x" * 80, 10, 100)
    assert "".join(long) == "x" * 80 and all(textfit.width(x, 10) <= 100 for x in long)
    assert textfit.wrap("", 10, 100) == [""]
    assert textfit.width("W", 10, bold=True) > textfit.width("W", 10) > textfit.width("i", 10)
