# Hoard: an S3-compatible caching gateway.
#
#   docker build -t hoard .
#   docker run --rm -p 8080:8080 -v hoard-cache:/var/cache/hoard -v /srv/data:/var/lib/hoard/data hoard
#
# The image serves /var/lib/hoard/data as its root mount and caches pages under /var/cache/hoard,
# from the config baked in at /etc/hoard/hoard.yaml; mount your own file there to change it. Any
# key can also be set from the environment (HOARD_SECTION__KEY, e.g. HOARD_AUTH__SECRET_KEY), and
# arguments after the image name go to `hoard serve` (e.g. `--workers 2`).

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/hoard
WORKDIR /src
# .dockerignore lets in only what the wheel is built from.
COPY . .
RUN /opt/hoard/bin/pip install . \
 && /opt/hoard/bin/hoard --version

FROM python:3.11-slim
ENV PATH=/opt/hoard/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN groupadd --system --gid 10001 hoard \
 && useradd --system --uid 10001 --gid hoard --no-create-home --home-dir /var/lib/hoard \
      --shell /usr/sbin/nologin hoard \
 && install -d -o hoard -g hoard /var/lib/hoard /var/lib/hoard/data /var/lib/hoard/meta /var/cache/hoard \
 && install -d /etc/hoard \
 && printf '%s\n' \
      '# Built into the image; mount a file here to replace it.' \
      'server: {port: 8080, workers: 1}' \
      'cache: {dir: /var/cache/hoard, size: 10GiB, reserved: 1GiB}' \
      'metastore: {dir: /var/lib/hoard/meta}' \
      'mounts:' \
      '  - {path: /, uri: "file:///var/lib/hoard/data"}' \
      > /etc/hoard/hoard.yaml
COPY --from=build /opt/hoard /opt/hoard

USER 10001:10001
WORKDIR /var/lib/hoard
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/_hoard/health', timeout=4)"]
ENTRYPOINT ["hoard", "serve", "--host", "0.0.0.0", "--config", "/etc/hoard/hoard.yaml"]
