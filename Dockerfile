# syntax=docker/dockerfile:1
# ingestd image: multi-stage (installed apart, copied as one folder), slim runtime, non-root.
#
# BASE: the Python image both stages start from. The default is the official one; the live
# deployment tests pass a stand-in built from Debian packages (tests/standins/).
ARG BASE=python:3.11-slim-bookworm

FROM ${BASE} AS build
WORKDIR /src
COPY pyproject.toml setup.cfg README.md ./
COPY daemon/ daemon/
COPY consumers/ consumers/
COPY records/ records/
COPY sql/ sql/
# ingestd and its dependencies go into one virtual environment, copied whole into the runtime
# stage: nothing of the build is left in a layer, and no RUN mounts another stage (podman 4's
# buildah reuses such a layer from its cache even when the stage changed). Every dependency ships
# manylinux wheels: no compiler is needed. Parts of pyarrow that ingestd never loads (Flight,
# C++ headers and tests: 45 MB) and the venv's own pip are removed, then the imports
# ingestd needs are tried, so a pyarrow that moves them fails the build rather than a load.
RUN python -m venv /opt/ingestd \
 && /opt/ingestd/bin/pip install --no-cache-dir --disable-pip-version-check . \
 && site="$(/opt/ingestd/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" \
 && rm -rf "$site"/pyarrow/include "$site"/pyarrow/tests "$site"/pyarrow/*flight* \
           "$site"/pyarrow/_pyarrow_cpp_tests* \
 && /opt/ingestd/bin/python -m pip uninstall --yes --quiet pip setuptools \
 && /opt/ingestd/bin/python -c "import pyarrow.parquet, pyarrow.compute, ingestd.records.formats, ingestd.records.parquetread, ingestd.daemon.cli"

FROM ${BASE} AS runtime
LABEL org.opencontainers.image.title="ingestd" \
      org.opencontainers.image.description="Landing folder and HTTP APIs to RabbitMQ to PostgreSQL bronze tables"
ENV PATH=/opt/ingestd/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    INGESTD_CONFIG=/etc/ingestd/ingestd.toml \
    INGESTD_LANDING_DIR=/data_lake
RUN groupadd --system --gid 10001 ingestd \
 && useradd --system --uid 10001 --gid ingestd --home-dir /var/lib/ingestd --create-home \
            --shell /usr/sbin/nologin ingestd \
 && install -d -o ingestd -g ingestd /data_lake /etc/ingestd
COPY --from=build /opt/ingestd /opt/ingestd
COPY --chown=root:ingestd ingestd.example.toml /etc/ingestd/ingestd.toml
COPY --chown=root:ingestd schemas/ /etc/ingestd/schemas/
USER 10001:10001
WORKDIR /var/lib/ingestd
# Health and metrics: inside a container, listen on all interfaces.
ENV INGESTD_HEALTH_HOST=0.0.0.0 \
    INGESTD_HEALTH_PORT=9464
EXPOSE 9464
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; port = sum(map(int, os.environ.get('INGESTD_HEALTH_PORT', '9464').split('+'))); urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=4)"]
ENTRYPOINT ["ingestd"]
CMD ["run"]
