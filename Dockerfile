# scopegate: the gateway as a container. Config and surface are mounted at /etc/scopegate,
# the token store lives on the /var/lib/scopegate volume, secrets come from the environment.
# The build stage has a C compiler: the request path is compiled with mypyc (setup.py).
FROM python:3.11 AS build
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY gateway ./gateway
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
RUN groupadd --system --gid 10001 scopegate \
 && useradd --system --uid 10001 --gid scopegate --home-dir /var/lib/scopegate --shell /usr/sbin/nologin scopegate \
 && mkdir -p /etc/scopegate /var/lib/scopegate \
 && chown scopegate:scopegate /var/lib/scopegate
COPY --from=build /install /usr/local
COPY deploy/docker/config.yaml /etc/scopegate/config.yaml
COPY policies /etc/scopegate/policies
ENV SCOPEGATE_CONFIG=/etc/scopegate/config.yaml \
    PYTHONUNBUFFERED=1
USER 10001:10001
WORKDIR /var/lib/scopegate
VOLUME ["/var/lib/scopegate"]
EXPOSE 8080 9090
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9090/healthz', timeout=2).status == 200 else 1)"
ENTRYPOINT ["scopegate"]
CMD ["serve"]
