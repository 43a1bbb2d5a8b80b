# The project image: worker, web interface, codec server and the `appeals` command line.
FROM python:3.11.10-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 APPEALS_VAR_DIR=/var/lib/appeals
RUN useradd --system --home /srv/appeals --uid 10001 appeals \
    && mkdir -p /var/lib/appeals/checkpoints && chown -R appeals /var/lib/appeals
WORKDIR /srv/appeals
# Every dependency pinned with its hashes (requirements.lock, written by `make lock` from
# pyproject.toml for Python 3.11 on Linux x86_64): nothing unpinned or unverified gets in, and this
# layer is reused until the lock changes.
COPY requirements.lock ./
RUN pip install --no-cache-dir --require-hashes -r requirements.lock
COPY pyproject.toml README.md ./
COPY domain domain
COPY store store
COPY activities activities
COPY workflows workflows
COPY worker worker
COPY cli cli
COPY stack stack
COPY web web
COPY desk desk
COPY templates templates
# The project itself, resolving nothing more; pip check fails the build if the lock misses a requirement.
RUN pip install --no-cache-dir --no-deps . && pip check
USER appeals
# Each service chooses its command in docker-compose.yml.
CMD ["appeals", "worker"]
