#!/usr/bin/env python3
"""The training run of a profile-guided build (scripts/build-pgo.sh): drives an instrumented
moongate through the request paths users run, so that its profile says which code is hot.

It starts a backend nginx and the instrumented gateway on loopback with a route per path, then
sends load to each in turn with wrk (and h2load for HTTP/2, when installed):

  plain proxying (GET, and POST with a body); Lua plugins in every phase (the example plugins of
  lua/plugins/: an auth plugin with a consumer, a plugin that rewrites the request and sets a
  response header, a body filter with a log phase; the benchmark's key check and shared-dict
  counter); native plugins (request-id, ip-restriction, uri-blocker, prometheus); a
  content_by_lua handler; refused requests (401, 404); and all of it over TLS (HTTP/1.1 and, with
  h2load, HTTP/2). The access log is on, as it is by default.

What a path not driven here costs after the build: LLVM treats code that never ran in training
as cold and optimises it for size. Keep the workloads as wide as what users run, not as narrow
as the benchmark.

Usage: bench/pgo_train.py --moongate PATH [--seconds N] [--h2-requests N]
tests/pgo_training.rs runs it briefly on the debug binary, so a workload that stops answering
as it means to fails the test suite, not the next profile-guided build.
The gateway must stop cleanly (SIGTERM) for its profile to be written.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

from bench import Nginx, free_port, wait_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE_PLUGINS = os.path.join(ROOT, "lua", "plugins")
BENCH_PLUGINS = os.path.join(ROOT, "bench", "lua", "plugins")
KEY = "pgo-training-key"
SNI = "pgo.moongate.test"


def self_signed(dirname):
    """A certificate and key for SNI, made with the openssl CLI."""
    cert, key = os.path.join(dirname, "cert.pem"), os.path.join(dirname, "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "2", "-subj", f"/CN={SNI}", "-addext", f"subjectAltName=DNS:{SNI}",
         "-keyout", key, "-out", cert],
        check=True, capture_output=True)
    with open(cert) as c, open(key) as k:
        return c.read(), k.read()


def indent(text, n):
    return "\n".join(" " * n + line for line in text.strip().splitlines())


def gateway_config(prefix, http_port, tls_port, backend_port):
    cert, key = self_signed(prefix)
    upstream = f"""upstream:
      type: roundrobin
      nodes:
        "127.0.0.1:{backend_port}": 1"""
    with open(os.path.join(prefix, "conf", "config.yaml"), "w") as f:
        f.write(f"""apisix:
  node_listen:
    - ip: 127.0.0.1
      port: {http_port}
  enable_ipv6: false
  enable_control: false
  ssl:
    enable: true
    listen:
      - ip: 127.0.0.1
        port: {tls_port}
    fallback_sni: {SNI}
nginx_config:
  worker_processes: 1
  error_log: {prefix}/logs/error.log
  error_log_level: warn
  http:
    access_log: {prefix}/logs/access.log
    custom_lua_shared_dict:
      bench-hits: 1m
deployment:
  role: data_plane
  role_data_plane:
    config_provider: yaml
plugin_attr:
  prometheus:
    enable_export_server: false
""")
    with open(os.path.join(prefix, "conf", "apisix.yaml"), "w") as f:
        f.write(f"""consumers:
  - username: trainee
    plugins:
      example-key-check:
        key: {KEY}
routes:
  - id: proxy
    uri: /proxy
    {upstream}
  - id: auth
    uri: /auth
    plugins:
      example-key-check: {{}}
      example-greeting: {{}}
    {upstream}
  - id: stats
    uri: /stats
    plugins:
      example-body-stats:
        footer: "-- counted\\n"
    {upstream}
  - id: counter
    uri: /counter
    plugins:
      bench-key-check:
        key: {KEY}
      bench-counter: {{}}
    {upstream}
  - id: native
    uri: /native/*
    plugins:
      request-id: {{}}
      ip-restriction:
        whitelist: ["127.0.0.0/8"]
      uri-blocker:
        block_rules: ["^/native/blocked"]
      prometheus: {{}}
    {upstream}
  - id: lua-content
    uri: /lua
    lua_handlers:
      content_by_lua: |
        ngx.header["Content-Type"] = "text/plain"
        ngx.say("hello, ", ngx.var.arg_name or "world", " from ", ngx.var.uri)
ssls:
  - id: training
    snis: [{SNI}]
    cert: |
{indent(cert, 6)}
    key: |
{indent(key, 6)}
#END
""")


def wrk(url, seconds, headers=(), script=None, refused=False):
    """Load on `url`; every answer must be a 2xx, or (`refused`) none may be: a workload that
    answers otherwise than meant would train the wrong path."""
    cmd = ["wrk", "-t1", "-c16", f"-d{seconds}s"]
    for h in headers:
        cmd += ["-H", h]
    if script:
        cmd += ["-s", script]
    out = subprocess.run(cmd + [url], capture_output=True, text=True, check=True).stdout
    total = int(re.search(r"(\d+) requests in", out).group(1))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    not_ok = int(m.group(1)) if m else 0
    print(f"  wrk {url}: {total} requests, {not_ok} not 2xx", flush=True)
    if total == 0 or (not_ok != total if refused else not_ok != 0):
        sys.exit(f"pgo_train: {url} did not answer as the workload means:\n{out}")


def h2load(url, requests, headers=()):
    cmd = ["h2load", "-n", str(requests), "-c", "8", "-m", "4"]
    for h in headers:
        cmd += ["-H", h]
    out = subprocess.run(cmd + [url], capture_output=True, text=True).stdout
    m = re.search(r"status codes: (\d+) 2xx", out)
    ok = int(m.group(1)) if m else 0
    print(f"  h2load {url}: {ok} of {requests} 2xx", flush=True)
    if ok != requests or "Application protocol: h2" not in out:
        sys.exit(f"pgo_train: {url} over HTTP/2 did not answer as the workload means:\n{out}")


class Gateway:
    """The instrumented gateway; its profile is written when it exits."""

    def __init__(self, binary, prefix):
        self.prefix = prefix
        self.proc = subprocess.Popen([binary, "run", "-p", prefix],
                                     stderr=open(os.path.join(prefix, "stderr.log"), "w"))

    def stop(self):
        """Stops the gateway; what went wrong, if anything (the profile is then missing)."""
        self.proc.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return "the gateway did not stop on SIGTERM: no profile written"
        if self.proc.returncode != 0:
            return f"the gateway exited with {self.proc.returncode}"
        return None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--moongate", required=True, help="the instrumented binary")
    ap.add_argument("--seconds", type=int, default=3, help="load time per workload")
    ap.add_argument("--h2-requests", type=int, default=20000, help="requests per HTTP/2 workload")
    args = ap.parse_args()
    if not shutil.which("wrk"):
        sys.exit("pgo_train: wrk is missing (apt-get install wrk)")

    tmp = tempfile.mkdtemp(prefix="moongate-pgo-")
    running = []
    try:
        backend_port, http_port, tls_port = free_port(), free_port(), free_port()
        backend = Nginx("backend", tmp, 0, f"""server {{
        listen 127.0.0.1:{backend_port};
        location / {{ return 200 "hello from the backend\\n"; }}
        location /stats {{ return 200 "line one\\nline two\\nline three\\n"; }}
    }}""")
        running.append(backend)
        prefix = os.path.join(tmp, "moongate")
        for d in ("conf", "logs", os.path.join("lua", "plugins")):
            os.makedirs(os.path.join(prefix, d), exist_ok=True)
        for src in (EXAMPLE_PLUGINS, BENCH_PLUGINS):
            for name in os.listdir(src):
                if name.endswith(".lua"):
                    shutil.copy(os.path.join(src, name), os.path.join(prefix, "lua", "plugins"))
        gateway_config(prefix, http_port, tls_port, backend_port)

        running.append(Gateway(args.moongate, prefix))
        wait_port(backend_port)
        wait_port(http_port, 30)
        wait_port(tls_port, 30)

        post = os.path.join(tmp, "post.lua")
        with open(post, "w") as f:
            f.write('wrk.method = "POST"\nwrk.body = string.rep("x", 2048)\n'
                    'wrk.headers["Content-Type"] = "application/octet-stream"\n')
        s = args.seconds
        for base in (f"http://127.0.0.1:{http_port}", f"https://127.0.0.1:{tls_port}"):
            print(f"training on {base}", flush=True)
            wrk(f"{base}/proxy", s)
            wrk(f"{base}/proxy", s, script=post)
            wrk(f"{base}/auth", s, headers=(f"X-Key: {KEY}", "X-Name: trainee"))
            wrk(f"{base}/auth", max(1, s // 3), refused=True)  # no key: 401
            wrk(f"{base}/stats", s)
            wrk(f"{base}/counter", s, headers=(f"apikey: {KEY}",))
            wrk(f"{base}/native/page?x=1", s)
            wrk(f"{base}/native/blocked", max(1, s // 3), refused=True)  # 403
            wrk(f"{base}/lua?name=trainee", s)
            wrk(f"{base}/nowhere", max(1, s // 3), refused=True)  # 404
        if shutil.which("h2load"):
            base = f"https://127.0.0.1:{tls_port}"
            for path in ("/proxy", "/counter", "/native/page", "/lua"):
                h2load(f"{base}{path}", args.h2_requests, headers=(f"apikey: {KEY}",))
        else:
            print("pgo_train: h2load is missing (apt-get install nghttp2-client): HTTP/2 is not trained", flush=True)
    finally:
        problems = [p.stop() for p in reversed(running)]
        if any(problems):
            # The gateway's stderr, before the prefix goes away.
            log = os.path.join(tmp, "moongate", "stderr.log")
            if os.path.exists(log):
                with open(log) as f:
                    sys.stderr.write(f.read()[-4000:])
        shutil.rmtree(tmp, ignore_errors=True)
    for problem in filter(None, problems):
        sys.exit(f"pgo_train: {problem}")


if __name__ == "__main__":
    main()
