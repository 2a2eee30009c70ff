# syntax=docker/dockerfile:1
#
# edge-router container image.
#
#   docker build -t edge-router:0.1.0 .
#   docker run --rm -p 8080:8080 -p 9901:9901 \
#     -v "$PWD/config.toml:/etc/edge-router/config.toml:ro" \
#     -v "$PWD/GeoIP:/usr/share/GeoIP:ro" \
#     -e EDGE_ROUTER_ADMIN_TOKEN \
#     edge-router:0.1.0
#
# The config is read from the mounted file /etc/edge-router/config.toml (its
# [admin] address must be reachable from outside the container, e.g.
# "0.0.0.0:9901", for probes and Prometheus). Without a mounted file the image
# still runs: the built-in seed config (traffic on 8080, admin on 127.0.0.1:9901
# inside the container), without GeoIP if none is mounted; its first log line
# says so. The admin token is read from the
# environment variable EDGE_ROUTER_ADMIN_TOKEN at run time; the image never
# contains one. The GeoLite2 database is mounted at /usr/share/GeoIP (see
# deploy/README.md). The root filesystem can be read-only; only /tmp needs to be
# writable.

# Exact tag; for byte-for-byte reproducible builds pin the digest as well
# (python:3.11.13-slim-bookworm@sha256:...).
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

# --- build: the project and all its dependencies as wheels -------------------
FROM ${PYTHON_IMAGE} AS build

# The data plane is compiled with mypyc (setup.py): gcc here, and
# EDGE_ROUTER_REQUIRE_EXTENSIONS=1 makes a failed compile fail the image build
# rather than ship the slower pure-Python data plane.
ENV PIP_NO_CACHE_DIR=1 \
    EDGE_ROUTER_REQUIRE_EXTENSIONS=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
# .dockerignore lets in only pyproject.toml, setup.py, README/LICENSE and the packages.
COPY . .
RUN pip wheel . -w /wheels

# --- runtime ---------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

ARG UID=10001
ARG GID=10001

LABEL org.opencontainers.image.title="edge-router" \
      org.opencontainers.image.description="Global traffic-steering reverse proxy: GeoIP routing, failover, circuit breakers" \
      org.opencontainers.image.licenses="Apache-2.0"

# serve reads $EDGE_ROUTER_CONFIG when that file is mounted; without one it runs
# the built-in seed config (and its first log line says so).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    EDGE_ROUTER_CONFIG=/etc/edge-router/config.toml \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

RUN groupadd --system --gid "${GID}" edge-router \
 && useradd --system --uid "${UID}" --gid "${GID}" --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin edge-router \
 && mkdir -p /etc/edge-router /usr/share/GeoIP

# Offline install from the wheels of the build stage; nothing of the build
# stage (sources, compilers, caches) ends up in this image.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index /wheels/*.whl \
 && edge-router --help > /dev/null \
 && edge-router --version

USER ${UID}:${GID}
WORKDIR /tmp

# 8080: proxied traffic; 9901: admin API, /metrics, /healthz, /readyz
EXPOSE 8080 9901

# No curl in slim images: the interpreter probes the admin listener itself.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9901/healthz', timeout=4).status == 200 else 1)"]

# SIGTERM drains in-flight requests (limits.drain_timeout, 20 s by default).
STOPSIGNAL SIGTERM
ENTRYPOINT ["edge-router"]
CMD ["serve"]
