# One image for every role (worker, API, Flower, emulator): the command picks the role.
#   build:  podman build --build-arg BASE_IMAGE=localhost/debian-min:bookworm -t localhost/sccm-refresh .
#   redis:  podman build --target redis --build-arg BASE_IMAGE=... -t localhost/sccm-refresh-redis .
# BASE_IMAGE: any Debian bookworm image: debian:bookworm-slim from a registry, or one built
# locally with scripts/build-base-image where no registry is reachable. Python, pip and venv
# come from Debian's packages; the app is built as a wheel and installed (never editable).
ARG BASE_IMAGE=docker.io/library/debian:bookworm-slim
# The extras installed: `--build-arg EXTRAS=monitor,kerberos` adds Kerberos (docs/kerberos.md),
# built against MIT Kerberos here and running on its libraries in the runtime stage.
ARG EXTRAS=monitor

# -- build: the wheel, installed into a virtualenv that the runtime stage copies ------------
FROM ${BASE_IMAGE} AS build
ARG EXTRAS
ENV DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
 && case ",${EXTRAS}," in *,kerberos,*) \
      apt-get install -y --no-install-recommends gcc python3-dev libkrb5-dev ;; esac \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN python3 -m venv /opt/build \
 && /opt/build/bin/pip install --quiet build \
 && /opt/build/bin/python -m build --wheel --outdir /wheels . \
 && python3 -m venv /opt/sccm-refresh \
 && /opt/sccm-refresh/bin/pip install --quiet "$(ls /wheels/sccm_refresh-*.whl)[${EXTRAS}]" \
 && /opt/sccm-refresh/bin/pip uninstall --quiet --yes pip
# Smoke check at build time: the entry point imports and the worker's app configures.
RUN /opt/sccm-refresh/bin/sccm-refresh --help >/dev/null

# -- redis: Debian's redis-server, for compose files on machines without a registry ---------
FROM ${BASE_IMAGE} AS redis
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /data && chown redis:redis /data
USER redis
WORKDIR /data
EXPOSE 6379
CMD ["redis-server", "--appendonly", "yes", "--maxmemory-policy", "noeviction", "--dir", "/data"]

# -- runtime: python3 only, the virtualenv, a non-root user ---------------------------------
FROM ${BASE_IMAGE} AS app
ARG EXTRAS
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 ca-certificates \
 && case ",${EXTRAS}," in *,kerberos,*) \
      apt-get install -y --no-install-recommends libgssapi-krb5-2 libkrb5-3 ;; esac \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 sccm \
 && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/sccm --shell /usr/sbin/nologin sccm
COPY --from=build /opt/sccm-refresh /opt/sccm-refresh
ENV PATH=/opt/sccm-refresh/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
USER 10001:10001
WORKDIR /home/sccm
ENTRYPOINT ["sccm-refresh"]
CMD ["--help"]
