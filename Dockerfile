# syntax=docker/dockerfile:1
# ingestd image: multi-stage (wheels built apart), slim runtime, non-root.

FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml setup.cfg README.md ./
COPY daemon/ daemon/
COPY consumers/ consumers/
COPY sql/ sql/
# Every dependency ships manylinux wheels: no compiler is needed.
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim-bookworm AS runtime
LABEL org.opencontainers.image.title="ingestd" \
      org.opencontainers.image.description="Landing folder and HTTP APIs to RabbitMQ to PostgreSQL bronze tables"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    INGESTD_CONFIG=/etc/ingestd/ingestd.toml \
    INGESTD_LANDING_DIR=/data_lake
# DL3013 (pin pip versions): the versions are those of the wheels built above;
# --no-index installs nothing else.
# hadolint ignore=DL3013
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels ingestd \
 && groupadd --system --gid 10001 ingestd \
 && useradd --system --uid 10001 --gid ingestd --home-dir /var/lib/ingestd --create-home \
            --shell /usr/sbin/nologin ingestd \
 && install -d -o ingestd -g ingestd /data_lake /etc/ingestd
COPY --chown=root:ingestd ingestd.example.toml /etc/ingestd/ingestd.toml
COPY --chown=root:ingestd schemas/ /etc/ingestd/schemas/
USER 10001:10001
WORKDIR /var/lib/ingestd
# Health and metrics: inside a container, listen on all interfaces.
ENV INGESTD_HEALTH_HOST=0.0.0.0 \
    INGESTD_HEALTH_PORT=9464
EXPOSE 9464
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('INGESTD_HEALTH_PORT', '9464') + '/healthz', timeout=4)"]
ENTRYPOINT ["ingestd"]
CMD ["run"]
