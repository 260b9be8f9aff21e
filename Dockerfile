# syntax=docker/dockerfile:1
# booking-rpc: production image. Expects DATABASE_URL (the embedded PostgreSQL is for laptops).

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY booking_rpc ./booking_rpc
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 booking
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
COPY sql /app/sql
ENV BOOKING_RPC_SQL_DIR=/app/sql \
    BOOKING_RPC_HOST=0.0.0.0 \
    BOOKING_RPC_PORT=3000 \
    BOOKING_RPC_METRICS_HOST=0.0.0.0 \
    BOOKING_RPC_METRICS_PORT=9464 \
    BOOKING_RPC_LOG_FORMAT=json \
    PYTHONUNBUFFERED=1
USER 10001
WORKDIR /app
EXPOSE 3000 9464
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9464/healthz', timeout=2)"]
CMD ["booking-rpc", "serve"]
