# One image for every service of compose.yaml: `orchestrator <command>`.
# Layers are ordered by how often they change: the dependencies (pyproject.toml) are
# built and installed before the sources are copied, so an edit to the code rebuilds
# only the project's own wheel — seconds, and no trip to the package index.

# --- build: the dependencies installed, then the project as a wheel -------------------
FROM python:3.11-slim AS build
# Its own label: the runtime images a rebuild leaves dangling are pruned by theirs, and
# this stage, also untagged, stays, because it is the next build's layer cache.
LABEL org.opencontainers.image.title=orchestrator-build
# The dependencies go into a virtualenv the runtime stage copies whole: installed files
# only, no wheels left behind in a layer of the image, and no pip of its own (the base
# image's pip installs into it with --python).
RUN python -m venv --without-pip /opt/orchestrator
WORKDIR /src
COPY pyproject.toml ./
# Optional extras, comma-separated: `docker build --build-arg EXTRAS=otel,celery .` (traces
# over OTLP; Celery tasks run unchanged). None by default: the smallest image.
ARG EXTRAS=""
# An empty package with the real metadata resolves and installs every dependency.
RUN mkdir -p orchestrator workers workflows \
    && touch README.md orchestrator/__init__.py workers/__init__.py workflows/__init__.py \
    && python -m pip --python /opt/orchestrator/bin/python install --no-cache-dir \
        ".${EXTRAS:+[$EXTRAS]}" \
    && python -m pip --python /opt/orchestrator/bin/python uninstall --yes orchestrator
COPY README.md ./
COPY orchestrator orchestrator
COPY workers workers
COPY workflows workflows
RUN python -m pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# --- runtime: the virtualenv, the project's wheel, a non-root user --------------------
FROM python:3.11-slim
LABEL org.opencontainers.image.title=orchestrator
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ORCHESTRATOR_LOG_FORMAT=json \
    ORCHESTRATOR_METRICS_PORT=9100 \
    ORCHESTRATOR_MANIFESTS_DIR=/app/manifests
RUN useradd --create-home --uid 10001 orchestrator \
    && mkdir -p /app/manifests /app/data \
    && chown -R orchestrator:orchestrator /app
COPY --from=build /opt/orchestrator /opt/orchestrator
COPY --from=build /wheels /wheels
# The command is on PATH also where PATH is set from outside (deploy/k8s's conductor).
RUN python -m pip --python /opt/orchestrator/bin/python install --no-cache-dir --no-index \
        --no-deps /wheels/*.whl \
    && rm -rf /wheels \
    && ln -s /opt/orchestrator/bin/orchestrator /usr/local/bin/orchestrator
# `python` is the virtualenv's: the one with the project and its dependencies.
ENV PATH=/opt/orchestrator/bin:$PATH
WORKDIR /app
USER orchestrator
EXPOSE 9100
# Workers drain on SIGTERM (stop taking jobs, finish running ones within grace_period).
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=5s --start-period=15s --retries=3 \
    CMD ["orchestrator", "healthcheck"]
ENTRYPOINT ["orchestrator"]
CMD ["--help"]
