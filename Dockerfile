# syntax=docker/dockerfile:1
# The serving image: the `serve` extra only (no torch), the shipped models baked in, a
# non-root user. `docker build .` builds the last stage (the service); `--target loadtest`
# builds the locust image the compose file's `load` profile runs.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# Stage 1: a virtual environment with the service and its serving dependencies.
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY pyproject.toml README.md LICENSE ./
COPY service ./service
COPY model_export ./model_export
# The extras pin every version exactly in pyproject.toml; DL3013 cannot see that.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir ".[serve]"

# Stage 2 (optional target): locust with the real test-day rows, for the load profile.
FROM ${PYTHON_IMAGE} AS loadtest
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md LICENSE ./
COPY service ./service
COPY model_export ./model_export
# The extras pin every version exactly in pyproject.toml; DL3013 cannot see that.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir ".[load]"
COPY models/egmn/1/manifest.json ./models/egmn/1/manifest.json
COPY data/kuairand ./data/kuairand
COPY feature_store ./feature_store
COPY loadtest ./loadtest
RUN useradd --system --uid 10002 --no-create-home locust
USER 10002
EXPOSE 8089 5557
ENTRYPOINT ["locust", "-f", "/app/loadtest/locustfile.py"]

# Stage 3 (default): the service.
FROM ${PYTHON_IMAGE} AS service
RUN groupadd --system --gid 10001 watchtime \
    && useradd --system --uid 10001 --gid watchtime --no-create-home --home-dir /app watchtime
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY models ./models
# The embedded feature store's tables (ids-only requests), with the data's licence.
COPY feature_store ./feature_store
# Workers and onnxruntime threads come from the environment. 0 is automatic: one worker per
# core the container is given (its CPU quota), onnxruntime's threads shared out among them.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    WATCHTIME_HOST=0.0.0.0 \
    WATCHTIME_PORT=8000 \
    WATCHTIME_GRPC_PORT=8001 \
    WATCHTIME_WORKERS=0 \
    WATCHTIME_INTRA_OP_THREADS=0 \
    WATCHTIME_INTER_OP_THREADS=1 \
    WATCHTIME_MODEL_REPOSITORY=/app/models \
    WATCHTIME_FEATURE_TABLES=/app/feature_store/kuairand.npz
USER 10001:10001
EXPOSE 8000 8001
# Slim images have no curl: the probe is a few lines of the image's own Python.
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; r = urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('WATCHTIME_PORT', '8000') + '/healthz', timeout=2); sys.exit(0 if r.status == 200 else 1)"]
CMD ["python", "-m", "service"]
