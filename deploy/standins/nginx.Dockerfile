# Stand-in for nginx:1.27-alpine where Docker Hub cannot be reached (made by
# scripts/base-images.sh; a user who can pull gets the real image): Debian's nginx behind an
# entrypoint that does what the official image's does for this project's compose file:
# templates in /etc/nginx/templates/*.template are filled from the environment into
# $NGINX_ENVSUBST_OUTPUT_DIR, and NGINX_LOCAL_RESOLVERS holds the container's DNS servers from
# /etc/resolv.conf when NGINX_ENTRYPOINT_LOCAL_RESOLVERS is set.
FROM debian:bookworm-slim
RUN apt-get update -q \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nginx gettext-base \
 && rm -rf /var/lib/apt/lists/* \
 && ln -sf /dev/stdout /var/log/nginx/access.log \
 && ln -sf /dev/stderr /var/log/nginx/error.log
COPY nginx-entrypoint.sh /docker-entrypoint.sh
ENTRYPOINT ["/docker-entrypoint.sh"]
STOPSIGNAL SIGQUIT
CMD ["nginx", "-g", "daemon off;"]
