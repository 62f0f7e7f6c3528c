# One image for every role (worker, emulator, flower); the command picks the role.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY worker ./worker
COPY tasks ./tasks
COPY config ./config
COPY emulator ./emulator
COPY cli ./cli
COPY testing ./testing
RUN pip install --no-cache-dir -e '.[monitor]'
USER nobody
ENTRYPOINT ["sccm-refresh"]
