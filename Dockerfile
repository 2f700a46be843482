# One image for every Interlock role: `docker run IMAGE api|worker|scheduler|migrate ...`.
# Build: docker build -t interlock .   (compose.yaml builds it for every service)
FROM python:3.11.10-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first, from exact pins: this layer is reused until requirements.lock changes.
# Every dependency ships manylinux wheels (psycopg[binary], lxml, pglast), so no compiler is needed.
COPY requirements.lock ./
RUN pip install --no-compile -r requirements.lock

# Then the code. Installed in place (editable, without dependencies) so that `interlock migrate`
# finds alembic.ini and alembic/ next to the packages.
COPY . .
RUN pip install --no-deps --no-build-isolation -e . \
    && python -m compileall -q interlock actors web models alembic \
    && groupadd --system --gid 10001 interlock \
    && useradd --system --uid 10001 --gid interlock --no-create-home --home-dir /app interlock

USER interlock:interlock

EXPOSE 8000

# The default command serves the API, so the default health check asks it. Compose replaces the
# check for the roles that serve no HTTP (workers, scheduler, migrate).
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]

ENTRYPOINT ["interlock"]
CMD ["api", "--bind", "0.0.0.0:8000"]
