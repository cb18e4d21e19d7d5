# hyper-ls-backend: the HyPER Label Studio ML backend, in HumanSignal's backend conventions
# (port 9090, state in the MODEL_DIR volume, WORKERS/THREADS, optional basic auth).
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PORT=9090 \
    MODEL_DIR=/data/models \
    WORKERS=1 \
    THREADS=8

WORKDIR /app
COPY pyproject.toml README.md ./
COPY hyper_ls_backend ./hyper_ls_backend
RUN pip install ".[redis,postgres]" && useradd --create-home hyper && mkdir -p /data/models \
    && chown hyper /data/models
USER hyper

VOLUME /data/models
EXPOSE 9090
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s CMD python -c "\
import base64, os, urllib.request; \
r = urllib.request.Request(f\"http://127.0.0.1:{os.environ['PORT']}/health\"); \
u, p = os.environ.get('BASIC_AUTH_USER'), os.environ.get('BASIC_AUTH_PASS', ''); \
u and r.add_header('Authorization', 'Basic ' + base64.b64encode(f'{u}:{p}'.encode()).decode()); \
urllib.request.urlopen(r, timeout=4)"

CMD ["hyper-ls", "serve"]
