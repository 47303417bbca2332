# podgate: the admission webhook server. Build from the repository root:
#   docker build -t podgate:0.1.0 .
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY webhook ./webhook
COPY policies ./policies
RUN pip install . && rm -rf /src
WORKDIR /
# The chart runs it read-only as this user; nothing here needs root.
USER 65532:65532
EXPOSE 8443
ENTRYPOINT ["podgate"]
CMD ["serve", "--bind", "0.0.0.0:8443", "--cert-dir", "/tmp/podgate-certs"]
