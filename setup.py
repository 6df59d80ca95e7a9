"""Build hook: compile the project's own .proto files with grpcio-tools.

The .proto files in ``protos/`` are written after kubelet's and NRI's own (each names its
source); the Python modules generated from them (``services/kubelet_gateway/pb/``, with
``.pyi`` type stubs for the messages) are never
edited by hand or committed. Every build, editable installs included, regenerates
them (before package discovery); ``python setup.py build_protos`` does it alone.
"""

from __future__ import annotations

from pathlib import Path

from setuptools import Command, setup

HERE = Path(__file__).resolve().parent
PROTOS = HERE / "protos"
OUT = HERE / "services" / "kubelet_gateway" / "pb"


def compile_protos() -> None:
    from grpc_tools import protoc  # a build requirement (pyproject [build-system])

    sources = sorted(PROTOS.glob("*.proto"))
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "__init__.py").write_text('"""Generated from protos/ at build time; do not edit."""\n')
    include = str(Path(protoc.__file__).parent / "_proto")
    for src in sources:
        # --pyi_out: type stubs for the messages, so that mypy checks their use
        args = ["protoc", f"-I{PROTOS}", f"-I{include}", f"--python_out={OUT}",
                f"--pyi_out={OUT}", f"--grpc_python_out={OUT}", str(src)]
        if protoc.main(args) != 0:
            raise SystemExit(f"protoc failed on {src.name}")


class BuildProtos(Command):
    description = "compile protos/*.proto into services/kubelet_gateway/pb"
    user_options: list = []

    def initialize_options(self) -> None:
        pass

    def finalize_options(self) -> None:
        pass

    def run(self) -> None:
        compile_protos()


# Generated before setup() runs, so that package discovery (which happens first)
# sees services/kubelet_gateway/pb in wheel builds as well as editable installs.
compile_protos()
setup(cmdclass={"build_protos": BuildProtos})
