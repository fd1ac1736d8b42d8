#!/usr/bin/env python3
"""CPU cost per proxied request: moongate against nginx, measured in one run on this machine.

Scenarios (--scenario, default all):
  proxy  plain reverse proxying: nginx against moongate with one plugin-less route;
  lua    two small Lua plugins on the route (bench/lua/plugins/: a key check in rewrite reading
         the `apikey` header, a shared-dict incr in access setting X-Hits): nginx with
         lua-nginx-module running the same plugin files from access_by_lua_block against moongate
         running them as APISIX route plugins.

Starts a backend nginx pinned to CPU 0, then each contender pinned to CPU 1, and drives each with
wrk (pinned to CPU 0) in interleaved rounds. Reports per contender: requests/s, p99 latency,
non-2xx answers, and the proxy's CPU microseconds per request ((utime + stime) of the proxy
process over the run, divided by the requests served). A run with any non-2xx answer or socket
error is refused: a fast error is not a result.

Usage: bench/bench.py [--scenario proxy|lua|all] [--rounds N] [--duration SECONDS] [--connections N]
                      [--moongate PATH]
"""

import argparse
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

CLK_TCK = os.sysconf("SC_CLK_TCK")
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
LUA_MODULES = [
    "/usr/lib/nginx/modules/ndk_http_module.so",
    "/usr/lib/nginx/modules/ngx_http_lua_module.so",
]
PLUGINS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lua", "plugins")
API_KEY = "bench-secret"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=10.0):
    end = time.time() + timeout
    while time.time() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} never opened")


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[11], fields[12] are utime and stime (stat fields 14 and 15).
    return int(fields[11]) + int(fields[12])


def children(pid):
    try:
        out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
        return [int(x) for x in out.split()]
    except OSError:
        return []


class Nginx:
    def __init__(self, name, tmp, cpu, body, modules=()):
        self.name = name
        self.prefix = os.path.join(tmp, name)
        os.makedirs(os.path.join(self.prefix, "logs"), exist_ok=True)
        conf = os.path.join(self.prefix, "nginx.conf")
        loads = "".join(f"load_module {m};\n" for m in modules)
        with open(conf, "w") as f:
            f.write(
                f"""{loads}daemon off;
master_process on;
worker_processes 1;
worker_cpu_affinity {1 << cpu:b};
error_log {self.prefix}/logs/error.log warn;
pid {self.prefix}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    {body}
}}
"""
            )
        self.proc = subprocess.Popen([NGINX, "-p", self.prefix, "-c", conf], stderr=subprocess.DEVNULL)

    def worker_pid(self):
        for _ in range(100):
            kids = children(self.proc.pid)
            if kids:
                return kids[0]
            time.sleep(0.05)
        raise RuntimeError(f"{self.name}: no worker process")

    def stop(self):
        self.proc.send_signal(signal.SIGQUIT)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class Moongate:
    def __init__(self, name, binary, tmp, cpu, port, routes_yaml, http_extra="", plugins_dir=None):
        self.name = name
        self.prefix = os.path.join(tmp, name)
        os.makedirs(os.path.join(self.prefix, "conf"), exist_ok=True)
        if plugins_dir:
            shutil.copytree(plugins_dir, os.path.join(self.prefix, "lua", "plugins"))
        with open(os.path.join(self.prefix, "conf", "config.yaml"), "w") as f:
            f.write(
                f"""apisix:
  node_listen:
    - ip: 127.0.0.1
      port: {port}
  enable_ipv6: false
  enable_control: false
  ssl:
    enable: false
nginx_config:
  worker_processes: 1
  http:
    enable_access_log: false
{http_extra}deployment:
  role: data_plane
  role_data_plane:
    config_provider: yaml
"""
            )
        with open(os.path.join(self.prefix, "conf", "apisix.yaml"), "w") as f:
            f.write(routes_yaml)
        self.proc = subprocess.Popen(
            ["taskset", "-c", str(cpu), binary, "run", "-p", self.prefix],
            stderr=open(os.path.join(self.prefix, "stderr.log"), "w"),
        )

    def worker_pid(self):
        return self.proc.pid

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def run_wrk(port, path, duration, conns, headers=()):
    cmd = ["taskset", "-c", "0", "wrk", "-t1", f"-c{conns}", f"-d{duration}s", "--latency"]
    for h in headers:
        cmd += ["-H", h]
    cmd.append(f"http://127.0.0.1:{port}{path}")
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    reqs = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    return {
        "requests": reqs,
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
        "errors": sum(int(x) for x in errors.groups()) if errors else 0,
        "p99_ms": float(p99.group(1)) * scale[p99.group(2)] if p99 else float("nan"),
        "raw": out,
    }


def measure(contender, port, path, duration, conns, headers=()):
    pid = contender.worker_pid()
    before = cpu_ticks(pid)
    t0 = time.time()
    r = run_wrk(port, path, duration, conns, headers)
    elapsed = time.time() - t0
    used = cpu_ticks(pid) - before
    r["rps"] = r["requests"] / elapsed
    r["cpu_us_per_req"] = used / CLK_TCK * 1e6 / max(r["requests"], 1)
    return r


def machine():
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    ver = subprocess.run([NGINX, "-v"], capture_output=True, text=True).stderr.strip()
    return f"{os.cpu_count()} CPUs, {cpu}, Linux {platform.release()}, {ver}"


def check_lua(name, port):
    """One request with the key (200 and an integer X-Hits) and one without (401): the plugins
    really run on this contender before it is measured."""
    url = f"http://127.0.0.1:{port}/lua"
    with urllib.request.urlopen(urllib.request.Request(url, headers={"apikey": API_KEY}), timeout=5) as r:
        hits = r.headers.get("X-Hits")
        if r.status != 200 or hits is None or not hits.isdigit():
            sys.exit(f"bench: {name}: /lua answered {r.status} with X-Hits {hits!r}, expected 200 and a count")
    try:
        urllib.request.urlopen(urllib.request.Request(url, headers={"apikey": "wrong"}), timeout=5)
        sys.exit(f"bench: {name}: /lua with a wrong key was not refused")
    except urllib.error.HTTPError as e:
        if e.code != 401:
            sys.exit(f"bench: {name}: /lua with a wrong key answered {e.code}, expected 401")


def run_scenario(title, contenders, path, headers, args):
    """Warm-up, then interleaved rounds; prints the table and returns the medians."""
    print(f"== {title}: {path}" + "".join(f" -H '{h}'" for h in headers), flush=True)
    for name, c, port in contenders:
        run_wrk(port, path, args.warmup, args.connections, headers)
    results = {name: [] for name, _, _ in contenders}
    for rnd in range(args.rounds):
        for name, c, port in contenders:
            r = measure(c, port, path, args.duration, args.connections, headers)
            if r["non2xx"] or r["errors"]:
                sys.exit(f"bench: refusing the run: {name} answered {r['non2xx']} non-2xx and had {r['errors']} socket errors\n{r['raw']}")
            results[name].append(r)
            print(f"round {rnd + 1} {name:12s} {r['rps']:9.0f} req/s  p99 {r['p99_ms']:6.2f} ms  {r['cpu_us_per_req']:6.2f} CPU-us/req", flush=True)
    print(f"{'contender':12s} {'req/s':>9s} {'p99 ms':>8s} {'non-2xx':>8s} {'CPU-us/req':>11s}")
    med = {}
    for name, _, _ in contenders:
        rs = results[name]
        med[name] = statistics.median(r["cpu_us_per_req"] for r in rs)
        print(
            f"{name:12s} {statistics.median(r['rps'] for r in rs):9.0f} {statistics.median(r['p99_ms'] for r in rs):8.2f} "
            f"{sum(r['non2xx'] for r in rs):8d} {med[name]:11.2f}"
        )
    (ref, _, _), (mine, _, _) = contenders
    print(f"ratio {mine}/{ref} (CPU per request, medians): {med[mine] / med[ref]:.3f}")
    # Rounds are interleaved, so each round's pair saw the same machine conditions; the median
    # of the per-round ratios is the figure least disturbed by drift on a shared machine.
    paired = [m["cpu_us_per_req"] / n["cpu_us_per_req"] for m, n in zip(results[mine], results[ref])]
    print(f"ratio {mine}/{ref}, median of per-round pairs: {statistics.median(paired):.3f} (rounds: {', '.join(f'{r:.2f}' for r in paired)})")
    print(flush=True)
    return med


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", choices=("proxy", "lua", "all"), default="all")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--moongate", default="target/release/moongate")
    args = ap.parse_args()
    want_proxy = args.scenario in ("proxy", "all")
    want_lua = args.scenario in ("lua", "all")

    for tool in ("wrk", "taskset", NGINX):
        if not shutil.which(tool) and not os.path.exists(tool):
            sys.exit(f"bench: {tool} is missing (apt-get install nginx wrk util-linux)")
    if not os.path.exists(args.moongate):
        sys.exit(f"bench: {args.moongate} is missing (cargo build --release)")
    if want_lua:
        for m in LUA_MODULES:
            if not os.path.exists(m):
                sys.exit(f"bench: {m} is missing (apt-get install libnginx-mod-http-lua)")

    tmp = tempfile.mkdtemp(prefix="moongate-bench-")
    backend_port = free_port()
    upstream = f"""upstream:
      type: roundrobin
      nodes:
        "127.0.0.1:{backend_port}": 1"""
    proxy_location = """proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";"""
    running = []
    try:
        backend = Nginx(
            "backend",
            tmp,
            0,
            f'server {{ listen 127.0.0.1:{backend_port}; location / {{ return 200 "hello world\\n"; }} }}',
        )
        running.append(backend)
        ports = [backend_port]
        scenarios = []
        if want_proxy:
            nginx_port, moongate_port = free_port(), free_port()
            proxy = Nginx(
                "nginx",
                tmp,
                1,
                f"""upstream backend {{ server 127.0.0.1:{backend_port}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{nginx_port};
        location / {{
            {proxy_location}
        }}
    }}""",
            )
            running.append(proxy)
            mg = Moongate(
                "moongate",
                args.moongate,
                tmp,
                1,
                moongate_port,
                f"""routes:
  - id: hello
    uri: /hello
    {upstream}
#END
""",
            )
            running.append(mg)
            ports += [nginx_port, moongate_port]
            scenarios.append(("proxy", [("nginx", proxy, nginx_port), ("moongate", mg, moongate_port)], "/hello", ()))
        if want_lua:
            nginx_lua_port, moongate_lua_port = free_port(), free_port()
            # The same plugin files, loaded once per worker; the access handler runs the rewrite
            # then the access phase function with the route's confs, answering early like APISIX
            # when one returns a status.
            nginx_lua = Nginx(
                "nginx-lua",
                tmp,
                1,
                f"""lua_package_path "{PLUGINS_DIR}/?.lua;;";
    lua_shared_dict bench-hits 1m;
    init_by_lua_block {{
        bench = {{
            key_check = require("bench-key-check"),
            key_check_conf = {{ key = "{API_KEY}" }},
            counter = require("bench-counter"),
            counter_conf = {{}},
        }}
    }}
    upstream backend {{ server 127.0.0.1:{backend_port}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{nginx_lua_port};
        location / {{
            access_by_lua_block {{
                local b = bench
                local ctx = {{}}
                local code, body = b.key_check.rewrite(b.key_check_conf, ctx)
                if not code then
                    code, body = b.counter.access(b.counter_conf, ctx)
                end
                if code then
                    ngx.status = code
                    ngx.say(body.message)
                    return ngx.exit(code)
                end
            }}
            {proxy_location}
        }}
    }}""",
                modules=LUA_MODULES,
            )
            running.append(nginx_lua)
            mg_lua = Moongate(
                "moongate-lua",
                args.moongate,
                tmp,
                1,
                moongate_lua_port,
                f"""routes:
  - id: lua
    uri: /lua
    plugins:
      bench-key-check:
        key: {API_KEY}
      bench-counter: {{}}
    {upstream}
#END
""",
                http_extra="    custom_lua_shared_dict:\n      bench-hits: 1m\n",
                plugins_dir=PLUGINS_DIR,
            )
            running.append(mg_lua)
            ports += [nginx_lua_port, moongate_lua_port]
            scenarios.append(
                ("lua", [("nginx+lua", nginx_lua, nginx_lua_port), ("moongate-lua", mg_lua, moongate_lua_port)], "/lua", (f"apikey: {API_KEY}",))
            )
        for p in ports:
            wait_port(p)
        if want_lua:
            # wait_port only proves the listener; give moongate a moment to load the route.
            for name, _, port in scenarios[-1][1]:
                for _ in range(50):
                    try:
                        check_lua(name, port)
                        break
                    except (urllib.error.HTTPError, urllib.error.URLError, SystemExit) as e:
                        last = e
                        time.sleep(0.1)
                else:
                    sys.exit(f"bench: {name}: Lua route check failed: {last}")

        print(f"machine: {machine()}")
        print(f"wrk -t1 -c{args.connections} -d{args.duration}s x {args.rounds} rounds, interleaved; backend nginx on CPU 0 with wrk, proxies on CPU 1")
        print()
        for title, contenders, path, headers in scenarios:
            run_scenario(title, contenders, path, headers, args)
    finally:
        for c in reversed(running):
            c.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
