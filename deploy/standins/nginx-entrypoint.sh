#!/bin/sh
# The official nginx image's template handling, reduced to what deploy/nginx needs.
set -eu
if [ -n "${NGINX_ENTRYPOINT_LOCAL_RESOLVERS:-}" ]; then
  NGINX_LOCAL_RESOLVERS=$(awk '/^nameserver/ { a = $2; if (a ~ /:/) a = "[" a "]"; printf "%s%s", sep, a; sep = " " }' /etc/resolv.conf)
  export NGINX_LOCAL_RESOLVERS
fi
out=${NGINX_ENVSUBST_OUTPUT_DIR:-/etc/nginx/conf.d}
for template in /etc/nginx/templates/*.template; do
  [ -e "$template" ] || continue
  name=$(basename "$template" .template)
  # Only variables that are set are replaced; nginx's own $variables stay as they are.
  vars=$(env | sed -n 's/^\([A-Za-z_][A-Za-z0-9_]*\)=.*/${\1}/p' | tr '\n' ' ')
  envsubst "$vars" < "$template" > "$out/$name"
done
exec "$@"
