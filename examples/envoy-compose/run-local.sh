#!/bin/sh
# Starts the demo's two services as local processes on loopback, without Docker: the web
# service (moongate's echo backend) and the proxy (moongate with envoy.yaml). The file is used
# as it is, with the compose service name and ports replaced for a single machine.
#
#   MOONGATE    the moongate binary (default: ../../target/debug/moongate, built if missing)
#   PROXY_PORT  where the proxy listens (default 8000, as in envoy.yaml)
#   WEB_PORT    where the web service listens (default 8080)
#   WORK_DIR    where the rewritten envoy.yaml and the logs go (default: a new temp dir)
#
# Stops both services on Ctrl-C or SIGTERM.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
MOONGATE=${MOONGATE:-$root/target/debug/moongate}
PROXY_PORT=${PROXY_PORT:-8000}
WEB_PORT=${WEB_PORT:-8080}
WORK_DIR=${WORK_DIR:-$(mktemp -d)}

if [ ! -x "$MOONGATE" ]; then
    (cd "$root" && cargo build --bin moongate)
fi

mkdir -p "$WORK_DIR/conf" "$WORK_DIR/logs" "$WORK_DIR/lua/plugins"
# The APISIX plugins dropped into lua/plugins/ (if any) run instead of the native ones.
for f in "$here"/lua/plugins/*; do
    if [ -e "$f" ]; then cp -R "$f" "$WORK_DIR/lua/plugins/"; fi
done
sed -e 's/address: 0\.0\.0\.0/address: 127.0.0.1/' \
    -e 's/address: web_service/address: 127.0.0.1/' \
    -e "s/port_value: 8000/port_value: $PROXY_PORT/" \
    -e "s/port_value: 8080/port_value: $WEB_PORT/" \
    "$here/envoy.yaml" > "$WORK_DIR/conf/envoy.yaml"

"$MOONGATE" echo --listen "127.0.0.1:$WEB_PORT" --name web_service &
web=$!
"$MOONGATE" run -p "$WORK_DIR" --envoy "$WORK_DIR/conf/envoy.yaml" &
proxy=$!

stop() {
    trap - INT TERM EXIT
    kill "$proxy" "$web" 2>/dev/null || true
    wait 2>/dev/null || true
}
trap stop INT TERM EXIT

echo "demo: proxy on http://127.0.0.1:$PROXY_PORT, web service on 127.0.0.1:$WEB_PORT, files in $WORK_DIR"
# Exits when either service does (or on a signal, through the trap).
while kill -0 "$proxy" 2>/dev/null && kill -0 "$web" 2>/dev/null; do
    sleep 1
done
