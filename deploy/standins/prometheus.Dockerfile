# Stand-in for prom/prometheus:v3.5.0 where Docker Hub cannot be reached (made by
# scripts/base-images.sh; a user who can pull gets the real image): Debian's Prometheus with the
# official image's layout: the config at /etc/prometheus/prometheus.yml, data in /prometheus,
# running as nobody.
FROM debian:bookworm-slim
RUN apt-get update -q \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus \
 && rm -rf /var/lib/apt/lists/* \
 && install -d -o nobody -g nogroup /prometheus
USER nobody
EXPOSE 9090
ENTRYPOINT ["/usr/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
