# One image for every voicechaos service of docker-compose.yml (fakes, runtime, harness).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY harness ./harness
COPY fake_providers ./fake_providers
COPY reference_runtime ./reference_runtime
COPY reports ./reports
RUN pip install --no-cache-dir .
COPY scenarios ./scenarios
COPY compose ./compose
ENV PYTHONUNBUFFERED=1
CMD ["voicechaos", "--help"]
