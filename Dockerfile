# syntax=docker/dockerfile:1
# Realtime chat gateway image.
#   docker build -t gateway:0.1.0 .
#   docker run --rm -p 8000:8000 -e GATEWAY_BROKER_URL=redis://redis:6379/0 gateway:0.1.0
# Two stages: "build" installs the pinned, hashed dependencies of requirements.lock into a
# virtualenv (its own cached layer, rebuilt only when the lock changes) and then the project
# without resolving anything; "runtime" copies only that virtualenv onto a fresh slim base and
# runs as an unprivileged user. Regenerate the lock with `python scripts/lock.py`.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# Where pip finds packages, for this stage only: pass the machine's own pip settings as build
# args when it uses an index mirror (`--build-arg PIP_INDEX_URL=...`); unset, pip's default
# index. The hashes in the lock decide what is installed, whichever index serves the files.
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_TRUSTED_HOST
ARG PIP_DEFAULT_TIMEOUT
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
WORKDIR /src
RUN python -m venv /opt/venv

# Dependencies only, exactly as locked: pip refuses any file whose sha256 the lock does not
# list and any dependency the lock does not pin. Reused while requirements.lock is unchanged.
COPY requirements.lock ./
RUN pip install --no-cache-dir --require-hashes -r requirements.lock

# The project itself, resolving nothing: its dependencies are all in the layer above.
COPY pyproject.toml README.md ./
COPY gateway/ gateway/
RUN pip install --no-cache-dir --no-deps . \
    && pip check \
    && python -c "import gateway"

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="gateway" \
      org.opencontainers.image.description="Realtime chat gateway: FastAPI WebSockets, Redis fan-out, Prometheus, OpenTelemetry"
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    GATEWAY_HOST=0.0.0.0 \
    GATEWAY_PORT=8000
RUN groupadd --system --gid 10001 gateway \
    && useradd --system --uid 10001 --gid gateway --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin gateway
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY ops/gunicorn.conf.py ops/gunicorn.conf.py
# Numeric uid so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
EXPOSE 8000
# The gateway keeps its multiprocess metric files in a fresh directory under /tmp
# (PROMETHEUS_MULTIPROC_DIR): with a read-only root filesystem, mount a writable /tmp
# (`docker run --read-only --tmpfs /tmp`, compose `tmpfs: /tmp`, Kubernetes emptyDir).
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('GATEWAY_PORT', '8000'); sys.exit(0 if urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=2).status == 200 else 1)"]
# gunicorn is PID 1 (exec form, no shell): SIGTERM from `docker stop` or the kubelet reaches the
# master directly, which drains its workers within graceful_timeout; it also reaps any child.
STOPSIGNAL SIGTERM
ENTRYPOINT ["gunicorn", "-c", "ops/gunicorn.conf.py"]
CMD ["gateway.app:app"]
