# The Blink worker image used by docker-compose.yml.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY pipeline ./pipeline
COPY streamer ./streamer
COPY schemas ./schemas
COPY simulator ./simulator
RUN pip install --no-cache-dir .
ENTRYPOINT []
CMD ["blink", "run", "--forever", "--root", "/data"]
