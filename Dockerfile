# syntax=docker/dockerfile:1
# hypertail sidecar image.
#
#   docker build -t hypertail .
#   docker run --rm --read-only -v /var/log/app:/var/log/app:ro \
#     -v $PWD/config.toml:/etc/hypertail/config.toml:ro -e HYPERTAIL_DATABASE__PASSWORD hypertail
#
# Two stages so that build tooling and the source tree stay out of the runtime image: the
# builder installs the package (runtime dependencies only, no dev extras, no embedded
# PostgreSQL) into a virtual environment, and the runtime stage copies just that environment.
# Nothing is written inside the image at run time, so it runs with a read-only root filesystem.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
RUN python -m venv /opt/hypertail
# schema.sql sits at the top of the repository; agent/schema.sql is a symlink to it, which the
# wheel resolves, so both must be in the build context.
COPY pyproject.toml README.md schema.sql ./
COPY agent ./agent
# The package and its runtime dependencies only. pip compiles the .pyc files here, at build
# time (its default), because the running container cannot write them.
RUN /opt/hypertail/bin/pip install --no-cache-dir .

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="hypertail" \
      org.opencontainers.image.description="Sidecar that tails structlog JSON lines into PostgreSQL/TimescaleDB, exactly once" \
      org.opencontainers.image.licenses="Apache-2.0"
# A fixed numeric uid/gid: Kubernetes' runAsNonRoot can only verify a numeric USER.
RUN groupadd --system --gid 10001 hypertail \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin hypertail
COPY --from=build /opt/hypertail /opt/hypertail
ENV PATH=/opt/hypertail/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HYPERTAIL_HEALTHCHECK_URL=http://127.0.0.1:8686/livez
USER 10001:10001
# Probes (/livez, /readyz, /startupz) and Prometheus /metrics; set [http] listen = "0.0.0.0:8686".
EXPOSE 8686
# Liveness only (the event loop turns): a database outage must not mark the container
# unhealthy, the agent waits it out with its files as the buffer. Python's urllib, because slim
# images have no curl; a non-2xx answer or no answer raises, and the exit status becomes 1.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['HYPERTAIL_HEALTHCHECK_URL'], timeout=4)"]
ENTRYPOINT ["hypertail"]
CMD ["run", "--config", "/etc/hypertail/config.toml"]
