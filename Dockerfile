# syntax=docker/dockerfile:1
# One image for every service of compose.yaml: `orchestrator <command>`.

# --- build: the project and its dependencies as wheels --------------------------------
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY orchestrator orchestrator
COPY workers workers
COPY workflows workflows
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# --- runtime: only the wheels, a non-root user ----------------------------------------
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ORCHESTRATOR_LOG_FORMAT=json \
    ORCHESTRATOR_METRICS_PORT=9100 \
    ORCHESTRATOR_MANIFESTS_DIR=/app/manifests
RUN useradd --create-home --uid 10001 orchestrator
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links=/wheels orchestrator \
    && rm -rf /wheels \
    && mkdir -p /app/manifests /app/data \
    && chown -R orchestrator:orchestrator /app
WORKDIR /app
USER orchestrator
EXPOSE 9100
# Workers drain on SIGTERM (stop taking jobs, finish running ones within grace_period).
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=5s --start-period=15s --retries=3 \
    CMD ["orchestrator", "healthcheck"]
ENTRYPOINT ["orchestrator"]
CMD ["--help"]
