# ccmon image: one image for every role; docker-compose.yml picks the role with
# `command: ["ccmon", "worker"]` / `["ccmon", "exporter", ...]` (no ENTRYPOINT on purpose).

FROM python:3.11-slim AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

# A C compiler for the build only: mypyc compiles the engine (setup.py); the runtime stage
# gets the compiled modules in /opt/ccmon and no compiler.
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/ccmon
WORKDIR /src
COPY . .
RUN /opt/ccmon/bin/pip install --no-cache-dir .


FROM python:3.11-slim

ENV PATH=/opt/ccmon/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

COPY --from=build /opt/ccmon /opt/ccmon

# Non-root. The working directory is writable: faust keeps its local table data
# under the current directory.
RUN groupadd --system --gid 10001 ccmon \
    && useradd --system --uid 10001 --gid ccmon --home-dir /var/lib/ccmon --create-home \
       --shell /usr/sbin/nologin ccmon
USER ccmon:ccmon
WORKDIR /var/lib/ccmon

# 9108: exporter (/metrics); 9109: worker process metrics.
EXPOSE 9108 9109
# ccmon's exporter listens on 127.0.0.1 by default; in a container that is unreachable, so the
# image says 0.0.0.0 explicitly. Off loopback, /api/callbacks/pending masks customer ids unless
# basic auth is on (docs/SECURITY.md). The worker and `ccmon rebuild` also need
# CCMON_CUSTOMER_KEY_SECRET(_FILE), given at run time, never baked in.
ENV CCMON_EXPORTER_HOST=0.0.0.0

CMD ["ccmon", "--help"]
