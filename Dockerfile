# knd: one image for the four services and `knd bus-config`; the command is
# `knd <service>` (ENTRYPOINT knd). Build from the repository root:
#   docker build -t knd:0.1.0 .
# The bus runs from the official nats image, beside it (DaemonSet sidecar, compose).

ARG PYTHON=python:3.11-slim-bookworm

# ---- build: the project and its dependencies (compatible ranges) into a venv -------
FROM ${PYTHON} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/knd
WORKDIR /src
# only what the package needs (see .dockerignore): the build compiles protos/ with
# grpcio-tools, a build-system requirement that pip fetches into its isolated build env
COPY pyproject.toml setup.py README.md ./
COPY protos/ protos/
COPY schemas/ schemas/
COPY services/ services/
COPY kndpeers/ kndpeers/
# setup.py compiles protos/ into services/kubelet_gateway/pb before package discovery;
# the import check (from outside /src) fails the build if the generated modules are
# missing from the installed package.
RUN /opt/knd/bin/pip install . \
 && cd / && /opt/knd/bin/python -c "import services.kubelet_gateway.grpc_server" \
 && /opt/knd/bin/knd --help >/dev/null

# ---- runtime ---------------------------------------------------------------------------
FROM ${PYTHON}
# iproute2: the plumber's --rdma-netns-mode auto asks `rdma system show` (netlink for
#           everything else is knd's own);
# pci.ids:  discovery names PCI vendors and devices (knd.dev/pciVendor, pciDevice).
RUN apt-get update \
 && apt-get install -y --no-install-recommends iproute2 pci.ids \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/knd /opt/knd
# the non-root user of discovery, publisher, bus-config (and nats); the plumber and
# the kubelet-gateway are run as root by their manifests (see deploy/README.md).
# /run/knd/bus and /var/lib/knd exist so a fresh compose volume mounted there takes
# their owner.
RUN groupadd --system --gid 65532 knd \
 && useradd --system --uid 65532 --gid 65532 --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin knd \
 && install -d -o 65532 -g 65532 -m 0750 /run/knd /run/knd/bus \
 && install -d -o 0 -g 0 -m 0755 /var/lib/knd
ENV PATH=/opt/knd/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 65532:65532
ENTRYPOINT ["knd"]
CMD ["--help"]
