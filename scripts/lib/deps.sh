# Sourced by the scripts in scripts/: installs the build and test prerequisites that are
# missing (Debian/Ubuntu, as root or with sudo) and checks that cargo is there.
need=()
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v cc >/dev/null 2>&1 || need+=(build-essential)
command -v make >/dev/null 2>&1 || need+=(make)
# src/lua/lib/crypto tests cross-check keys and signatures with the openssl CLI.
command -v openssl >/dev/null 2>&1 || need+=(openssl)
# tests/oracle.rs runs the same Lua on Debian's nginx + lua-nginx-module as a behaviour oracle.
for pkg in nginx libnginx-mod-http-lua lua-cjson; do
    dpkg -s "$pkg" 2>/dev/null | grep -q '^Status: install ok installed' || need+=("$pkg")
done
[ -f /usr/lib/nginx/modules/ngx_http_lua_module.so ] || need+=(libnginx-mod-http-lua)
# tests/lua_redis.rs, tests/rate_limits.rs start their own redis-server (the Redis clients
# and the limit-* Redis policies run against a real Redis).
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
# The etcd client crate compiles etcd's gRPC definitions with protoc; tests/etcd.rs starts a real
# etcd server and drives it with etcdctl.
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || need+=(etcd-client)
# tests/pgo_training.rs runs bench/pgo_train.py (the profile-guided build's training) briefly,
# which loads the gateway with wrk and, over HTTP/2, h2load.
command -v python3 >/dev/null 2>&1 || need+=(python3)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v h2load >/dev/null 2>&1 || need+=(nghttp2-client)
if [ ${#need[@]} -gt 0 ]; then
    echo "$(basename "$0"): installing ${need[*]}"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
fi
command -v cargo >/dev/null 2>&1 || { echo "$(basename "$0"): cargo is missing: install Rust (https://rustup.rs)" >&2; exit 1; }
