# consent-proxy container image. Configuration comes from the environment (see README).
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PROXY_HOST=0.0.0.0 \
    PROXY_PORT=8080 \
    OPTOUT_SPOOL_DIR=/var/lib/consent-proxy/spool

WORKDIR /app
RUN groupadd --system --gid 10001 proxy \
 && useradd --system --uid 10001 --gid proxy --home-dir /app --no-create-home proxy \
 && install -d -m 700 -o 10001 -g 10001 /var/lib/consent-proxy/spool

COPY pyproject.toml README.md ./
COPY proxy ./proxy
RUN pip install --no-cache-dir .
COPY sql ./sql
COPY config ./config

USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"]
ENTRYPOINT ["consent-proxy"]
CMD ["serve"]
