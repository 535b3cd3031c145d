# syntax=docker/dockerfile:1
# archiverd container image: the daemon for a DaemonSet (reading the node's container logs)
# or a sidecar (reading a shared volume). Build: docker build -t archiverd:0.1.0 .
# Run and mount guide: docs/DEPLOY.md.

# --- build: the archiverd wheel and its dependencies' wheels, installed into a venv ---------
# Trimmed for size: no pip/setuptools in the venv, and of botocore's service models only the
# ones archiverd calls (S3, KMS) or the credential chain needs (STS for IRSA, SSO).
# The full image, not slim: its C compiler builds archiverd's one C module (the record
# scanner, several times faster than its pure-Python fallback); the same Python as the
# runtime stage, whose image has no compiler.
FROM python:3.11.14-bookworm AS build
# Where pip finds packages, when not PyPI: a mirror (PIP_INDEX_URL) or, offline, a wheelhouse
# served over HTTP (PIP_NO_INDEX=1, PIP_FIND_LINKS=http://127.0.0.1:8000/): docs/DEPLOY.md.
ARG PIP_INDEX_URL
ARG PIP_FIND_LINKS
ARG PIP_NO_INDEX
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY archiverd ./archiverd
RUN pip wheel --no-cache-dir --wheel-dir /wheels . \
    && python -m venv /opt/archiverd \
    && /opt/archiverd/bin/pip install --no-cache-dir --no-index --find-links /wheels \
        /wheels/archiverd-*.whl \
    && /opt/archiverd/bin/archiverd --version \
    && /opt/archiverd/bin/python -c "import archiverd.formats._scan" \
    && /opt/archiverd/bin/pip uninstall --yes --quiet pip setuptools \
    && find /opt/archiverd/lib/python3.*/site-packages/botocore/data -mindepth 1 -maxdepth 1 \
        -type d ! -name s3 ! -name kms ! -name sts ! -name sso ! -name sso-oidc \
        -exec rm -rf {} +

# --- runtime: the venv only; no compilers, no pip cache, no sources ---------------------------
FROM python:3.11.14-slim-bookworm
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="archiverd" \
      org.opencontainers.image.description="Archive container logs to a versioned S3 bucket, encrypted (AES-256-GCM) on the host" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.documentation="docs/DEPLOY.md"

# A fixed non-root uid/gid so hostPath state and Kubernetes runAsUser can name it.
RUN groupadd --system --gid 10001 archiverd \
    && useradd --system --uid 10001 --gid archiverd --no-create-home \
        --home-dir /var/lib/archiverd --shell /usr/sbin/nologin archiverd \
    && install -d -m 0700 -o archiverd -g archiverd /var/lib/archiverd \
    && install -d -m 0755 /etc/archiverd

COPY --from=build /opt/archiverd /opt/archiverd

ENV PATH=/opt/archiverd/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ARCHIVERD_HTTP__LISTEN=0.0.0.0:9464

# Non-root by default (sidecars, group-readable logs). A DaemonSet reading root-owned node logs
# runs as uid 0 with every capability dropped except DAC_READ_SEARCH: see the manifests.
USER 10001:10001
WORKDIR /var/lib/archiverd
VOLUME ["/var/lib/archiverd"]
EXPOSE 9464

HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9464/healthz', timeout=4)"]

ENTRYPOINT ["archiverd"]
# `run` reads /etc/archiverd/archiverd.toml when mounted, else the embedded defaults.
CMD ["run"]
