# The project image: worker, web interface, codec server and the `appeals` command line.
FROM python:3.11.10-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 APPEALS_VAR_DIR=/var/lib/appeals
RUN useradd --system --home /srv/appeals --uid 10001 appeals \
    && mkdir -p /var/lib/appeals && chown appeals /var/lib/appeals
WORKDIR /srv/appeals
COPY pyproject.toml README.md ./
COPY domain domain
COPY store store
COPY activities activities
COPY workflows workflows
COPY worker worker
COPY cli cli
COPY stack stack
COPY web web
COPY templates templates
RUN pip install --no-cache-dir . && pip check
USER appeals
# Each service chooses its command in docker-compose.yml.
CMD ["appeals", "worker"]
