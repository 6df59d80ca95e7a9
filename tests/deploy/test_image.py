"""The Dockerfile and its build context (no Docker here: the file is read, not built)."""

from __future__ import annotations

import fnmatch
import re
import tomllib

from tests.deploy import manifests as m

DOCKERFILE = m.ROOT / "Dockerfile"
IGNORE = m.ROOT / ".dockerignore"


def instructions(text: str) -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n", " ", text)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def in_context(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rule: the last matching pattern wins ('!' re-includes)."""
    keep = True
    for p in patterns:
        neg = p.startswith("!")
        pat = p[1:] if neg else p
        pat = pat.rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        if any(fnmatch.fnmatch(pre, pat) or fnmatch.fnmatch(pre, pat.replace("**/", ""))
               for pre in prefixes):
            keep = neg
    return keep


def ignore_patterns() -> list[str]:
    return [ln.strip() for ln in IGNORE.read_text().splitlines()
            if ln.strip() and not ln.startswith("#")]


def test_dockerfile_shape():
    ins = instructions(DOCKERFILE.read_text())
    froms = [rest for word, rest in ins if word == "FROM"]
    args = dict(rest.split("=", 1) for word, rest in ins if word == "ARG" and "=" in rest)
    base = args["PYTHON"]
    assert all(f.split()[0] == "${PYTHON}" for f in froms) and len(froms) == 2
    version = re.fullmatch(r"python:3\.(\d+)-slim(-\w+)?", base)
    assert version and int(version.group(1)) >= 11, base
    final = ins[max(i for i, (w, _) in enumerate(ins) if w == "FROM"):]
    assert ("ENTRYPOINT", '["knd"]') in final
    (user,) = [rest for word, rest in final if word == "USER"]
    assert user.split(":")[0] not in ("0", "root")
    run = " ".join(rest for word, rest in ins if word == "RUN")
    assert "pip install ." in run and "import services.kubelet_gateway.grpc_server" in run
    assert "--no-install-recommends iproute2 pci.ids" in run
    assert "65532" in run  # the uid the manifests run the unprivileged services as


def test_build_context_holds_what_the_build_copies_and_nothing_else():
    patterns = ignore_patterns()
    copies = [rest.split()[:-1] for word, rest in instructions(DOCKERFILE.read_text())
              if word == "COPY" and "--from" not in rest]
    sources = [s.rstrip("/") for c in copies for s in c]
    # every package the wheel holds (pyproject's packages.find), and the files that build it
    packages = {p.rstrip("*") for p in
                tomllib.loads((m.ROOT / "pyproject.toml").read_text())
                ["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert packages >= {"services", "schemas", "kndpeers"}
    assert set(sources) == {"pyproject.toml", "setup.py", "README.md", "protos", *packages}
    for s in sources:
        assert (m.ROOT / s).exists(), s
        assert in_context(s, patterns), f"{s} is left out of the build context"
    for left_out in (".venv", ".git", "tests", "deploy", "bench",
                     "services/kubelet_gateway/pb", "services/__pycache__"):
        assert not in_context(left_out, patterns), f"{left_out} is in the build context"
    assert in_context("services/cli.py", patterns)


def test_context_rule_can_tell():
    assert not in_context("services/x.py", ["*", "!schemas/"])
    assert in_context("schemas/a.py", ["*", "!schemas/"])


def test_manifests_run_the_image_the_dockerfile_builds():
    images = {c["image"] for name in m.variants()
              for c in m.containers(m.pod_spec(m.daemonset(m.render(name))))
              if m.is_knd_image(c["image"])}
    assert images == {"knd:0.1.0"}
    assert "docker build -t knd:0.1.0 ." in DOCKERFILE.read_text()
