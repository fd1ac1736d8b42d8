#!/usr/bin/env python3
"""Cost per proxied request: moongate against nginx, measured in one run on this machine.

Scenarios (--scenario, default all):
  proxy     plain reverse proxying: nginx against moongate with one plugin-less route;
  lua       two small Lua plugins on the route (bench/lua/plugins/: a key check in rewrite reading
            the `apikey` header, a shared-dict incr in access setting X-Hits): nginx with
            lua-nginx-module running the same plugin files from access_by_lua_block against
            moongate running them as APISIX route plugins;
  key-auth  APISIX's own key-auth plugin, unmodified, on a route with one consumer (copied at run
            time from --apisix-root; never part of this repository) against nginx with
            lua-nginx-module doing the same key check in access_by_lua_block
            (bench/lua/nginx/key_check.lua). Skipped when --apisix-root is not given.
  prometheus
            what the native `prometheus` plugin costs: moongate with a plugin-less route against
            the same binary with `prometheus: {}` on the route; not part of `all`.

Two ways to measure (both refuse a run with any non-2xx answer or socket error: a fast error is
not a result):

  CPU time (default): a backend nginx pinned to CPU 0, each contender pinned to CPU 1, driven by
  wrk (pinned to CPU 0) in interleaved rounds. Reports requests/s, p99 latency, non-2xx answers
  and the contender's CPU microseconds per request ((utime + stime) of its process over the
  round, divided by the requests served), user and system time apart.

  --instructions: each contender runs under valgrind's callgrind; after a warm-up its counters
  are zeroed, a fixed number of requests is sent (--requests over --connections keep-alive
  connections) and the user-space instructions it executed are divided by that number. Counts
  do not depend on what else runs on the machine, so they are the figure to optimise against
  on a shared machine; they leave out kernel time (the socket system calls both contenders make).

Usage: bench/bench.py [--scenario proxy|lua|key-auth|prometheus|all] [--apisix-root DIR]
                      [--rounds N] [--duration SECONDS] [--connections N] [--moongate PATH]
                      [--instructions [--requests N] [--callgrind-out DIR]]
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
import threading
import time
import urllib.error
import urllib.request

CLK_TCK = os.sysconf("SC_CLK_TCK")
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
LUA_MODULES = [
    "/usr/lib/nginx/modules/ndk_http_module.so",
    "/usr/lib/nginx/modules/ngx_http_lua_module.so",
]
BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
PLUGINS_DIR = os.path.join(BENCH_DIR, "lua", "plugins")
NGINX_LUA_DIR = os.path.join(BENCH_DIR, "lua", "nginx")
API_KEY = "bench-secret"
# LuaJIT writes machine code at run time: valgrind must notice code it has already translated
# being rewritten, or it runs stale translations.
VALGRIND = ["valgrind", "--tool=callgrind", "--smc-check=all-non-file", "--dump-instr=no"]


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
    """(utime, stime) of a process, in clock ticks."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[11], fields[12] are utime and stime (stat fields 14 and 15).
    return int(fields[11]), int(fields[12])


def children(pid):
    try:
        out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
        return [int(x) for x in out.split()]
    except OSError:
        return []


class Nginx:
    """An nginx with one worker. Under callgrind it runs without a master process, so the one
    process measured is the one serving."""

    def __init__(self, name, tmp, cpu, body, modules=(), instrument=False):
        self.name = name
        self.instrument = instrument
        self.prefix = os.path.join(tmp, name)
        os.makedirs(os.path.join(self.prefix, "logs"), exist_ok=True)
        conf = os.path.join(self.prefix, "nginx.conf")
        loads = "".join(f"load_module {m};\n" for m in modules)
        master = "off" if instrument else "on"
        with open(conf, "w") as f:
            f.write(
                f"""{loads}daemon off;
master_process {master};
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
        cmd = [NGINX, "-p", self.prefix, "-c", conf]
        if instrument:
            cmd = VALGRIND + [f"--callgrind-out-file={self.prefix}/callgrind.%p"] + cmd
        self.proc = subprocess.Popen(cmd, stderr=open(os.path.join(self.prefix, "stderr.log"), "w"))

    def worker_pid(self):
        if self.instrument:
            return self.proc.pid
        for _ in range(100):
            kids = children(self.proc.pid)
            if kids:
                return kids[0]
            time.sleep(0.05)
        raise RuntimeError(f"{self.name}: no worker process")

    def stop(self):
        self.proc.send_signal(signal.SIGQUIT)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class Moongate:
    def __init__(self, name, binary, tmp, cpu, port, routes_yaml, http_extra="", plugin_files=(), instrument=False):
        self.name = name
        self.instrument = instrument
        self.prefix = os.path.join(tmp, name)
        os.makedirs(os.path.join(self.prefix, "conf"), exist_ok=True)
        plugins = os.path.join(self.prefix, "lua", "plugins")
        os.makedirs(plugins, exist_ok=True)
        for f in plugin_files:
            shutil.copy(f, plugins)
        with open(os.path.join(self.prefix, "conf", "config.yaml"), "w") as f:
            f.write(
                f"""apisix:
  node_listen:
    - ip: 127.0.0.1
      port: {port}
  enable_ipv6: false
  enable_control: false
nginx_config:
  worker_processes: 1
  http:
    enable_access_log: false
{http_extra}deployment:
  role: data_plane
  role_data_plane:
    config_provider: yaml
plugin_attr:
  prometheus:
    enable_export_server: false
"""
            )
        with open(os.path.join(self.prefix, "conf", "apisix.yaml"), "w") as f:
            f.write(routes_yaml)
        if instrument:
            cmd = VALGRIND + [f"--callgrind-out-file={self.prefix}/callgrind.%p"]
        else:
            cmd = ["taskset", "-c", str(cpu)]
        self.proc = subprocess.Popen(
            cmd + [binary, "run", "-p", self.prefix],
            stderr=open(os.path.join(self.prefix, "stderr.log"), "w"),
        )

    def worker_pid(self):
        return self.proc.pid

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
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
    u0, s0 = cpu_ticks(pid)
    t0 = time.time()
    r = run_wrk(port, path, duration, conns, headers)
    elapsed = time.time() - t0
    u1, s1 = cpu_ticks(pid)
    n = max(r["requests"], 1)
    r["rps"] = r["requests"] / elapsed
    r["user_us"] = (u1 - u0) / CLK_TCK * 1e6 / n
    r["sys_us"] = (s1 - s0) / CLK_TCK * 1e6 / n
    r["cpu_us_per_req"] = r["user_us"] + r["sys_us"]
    return r


def fixed_requests(port, path, headers, total, conns):
    """Sends `total` GET requests over `conns` keep-alive connections (one thread each, one
    request in flight per connection, as wrk does). Returns the statuses that were not 2xx and
    the errors met."""
    bad, errors = [], []
    head = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n" + "".join(h + "\r\n" for h in headers) + "\r\n").encode()

    def one_connection(n):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
                f = s.makefile("rb")
                for _ in range(n):
                    s.sendall(head)
                    status = int(f.readline().split()[1])
                    length, chunked = None, False
                    while True:
                        line = f.readline()
                        if line in (b"\r\n", b""):
                            break
                        k, _, v = line.decode("latin-1").partition(":")
                        k = k.strip().lower()
                        if k == "content-length":
                            length = int(v)
                        elif k == "transfer-encoding" and "chunked" in v.lower():
                            chunked = True
                    if chunked:
                        while True:
                            size = int(f.readline().split(b";")[0], 16)
                            f.read(size + 2)
                            if size == 0:
                                break
                    elif length:
                        f.read(length)
                    if status // 100 != 2:
                        bad.append(status)
        except (OSError, ValueError, IndexError) as e:
            errors.append(repr(e))

    per = [total // conns + (1 if i < total % conns else 0) for i in range(conns)]
    threads = [threading.Thread(target=one_connection, args=(n,)) for n in per]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return bad, errors


def callgrind_total(pid, prefix):
    """Dumps the counters of the callgrind process `pid` and returns the instructions counted
    since they were last zeroed, and the dump's path."""
    before = set(os.listdir(prefix))
    subprocess.run(["callgrind_control", "-d", str(pid)], capture_output=True, check=True)
    for _ in range(200):
        new = [f for f in set(os.listdir(prefix)) - before if f.startswith("callgrind.")]
        if new:
            path = os.path.join(prefix, new[0])
            # The file is complete once its totals line is written.
            with open(path) as f:
                for line in f:
                    if line.startswith("totals:") or line.startswith("summary:"):
                        return int(line.split()[1]), path
        time.sleep(0.1)
    raise RuntimeError(f"no callgrind dump from pid {pid} in {prefix}")


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


def expect(name, url, headers, status, check=None):
    """One request that must answer `status` (and pass `check(response headers)`)."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as r:
            got, hdrs = r.status, r.headers
    except urllib.error.HTTPError as e:
        got, hdrs = e.code, e.headers
    if got != status:
        raise AssertionError(f"{name}: {url} with {headers} answered {got}, expected {status}")
    if check:
        problem = check(hdrs)
        if problem:
            raise AssertionError(f"{name}: {url}: {problem}")


def check_lua(name, port):
    """The plugins really run on this contender before it is measured: 200 and an integer
    X-Hits with the key, 401 with a wrong one."""
    url = f"http://127.0.0.1:{port}/lua"

    def hits(h):
        v = h.get("X-Hits")
        return None if v and v.isdigit() else f"X-Hits is {v!r}, expected a count"

    expect(name, url, {"apikey": API_KEY}, 200, hits)
    expect(name, url, {"apikey": "wrong"}, 401)


def check_key_auth(name, port):
    """200 with the consumer's key, 401 (with a WWW-Authenticate challenge) without it and
    with a wrong one."""
    url = f"http://127.0.0.1:{port}/auth"

    def challenge(h):
        return None if h.get("WWW-Authenticate") else "no WWW-Authenticate header on the 401"

    expect(name, url, {"apikey": API_KEY}, 200)
    expect(name, url, {"apikey": "wrong"}, 401, challenge)
    expect(name, url, {}, 401, challenge)


def ready(name, port, check, timeout):
    """wait_port only proves the listener: retry the functional check until the config is in."""
    end = time.time() + timeout
    while True:
        try:
            check(name, port)
            return
        except (AssertionError, urllib.error.URLError, OSError) as e:
            if time.time() > end:
                sys.exit(f"bench: {name}: the route check failed: {e}")
            time.sleep(0.2)


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
            print(
                f"round {rnd + 1} {name:14s} {r['rps']:9.0f} req/s  p99 {r['p99_ms']:6.2f} ms  "
                f"{r['cpu_us_per_req']:6.2f} CPU-us/req (user {r['user_us']:.2f}, sys {r['sys_us']:.2f})",
                flush=True,
            )
    print(f"{'contender':14s} {'req/s':>9s} {'p99 ms':>8s} {'non-2xx':>8s} {'CPU-us/req':>11s} {'user':>7s} {'sys':>7s}")
    med = {}
    for name, _, _ in contenders:
        rs = results[name]
        med[name] = statistics.median(r["cpu_us_per_req"] for r in rs)
        print(
            f"{name:14s} {statistics.median(r['rps'] for r in rs):9.0f} {statistics.median(r['p99_ms'] for r in rs):8.2f} "
            f"{sum(r['non2xx'] for r in rs):8d} {med[name]:11.2f} {statistics.median(r['user_us'] for r in rs):7.2f} "
            f"{statistics.median(r['sys_us'] for r in rs):7.2f}"
        )
    (ref, _, _), (mine, _, _) = contenders
    print(f"ratio {mine}/{ref} (CPU per request, medians): {med[mine] / med[ref]:.3f}")
    # Rounds are interleaved, so each round's pair saw the same machine conditions; the median
    # of the per-round ratios is the figure least disturbed by drift on a shared machine.
    paired = [m["cpu_us_per_req"] / n["cpu_us_per_req"] for m, n in zip(results[mine], results[ref])]
    print(f"ratio {mine}/{ref}, median of per-round pairs: {statistics.median(paired):.3f} (rounds: {', '.join(f'{r:.2f}' for r in paired)})")
    print(flush=True)
    return med


def count_scenario(title, contenders, path, headers, args):
    """Instructions per request of each contender under callgrind."""
    print(f"== {title}: {path}" + "".join(f" -H '{h}'" for h in headers), flush=True)
    counts = {}
    for name, c, port in contenders:
        pid = c.worker_pid()
        bad, errors = fixed_requests(port, path, headers, args.requests // 4, args.connections)
        subprocess.run(["callgrind_control", "-z", str(pid)], capture_output=True, check=True)
        bad2, errors2 = fixed_requests(port, path, headers, args.requests, args.connections)
        total, dump = callgrind_total(pid, c.prefix)
        if args.callgrind_out:
            os.makedirs(args.callgrind_out, exist_ok=True)
            shutil.copy(dump, os.path.join(args.callgrind_out, f"callgrind.{title}.{name}"))
        if bad or bad2 or errors or errors2:
            sys.exit(f"bench: refusing the run: {name} answered {len(bad + bad2)} non-2xx ({sorted(set(bad + bad2))}) and had errors {errors + errors2}")
        counts[name] = total / args.requests
        print(f"{name:14s} {counts[name]:10.0f} instructions/request ({total} over {args.requests} requests)", flush=True)
    (ref, _, _), (mine, _, _) = contenders
    print(f"ratio {mine}/{ref} (instructions per request): {counts[mine] / counts[ref]:.3f}")
    print(flush=True)
    return counts


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", choices=("proxy", "lua", "key-auth", "prometheus", "all"), default="all")
    ap.add_argument("--apisix-root", help="an APISIX checkout: its apisix/plugins/key-auth.lua is copied into a temporary prefix for the key-auth scenario")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--moongate", default="target/release/moongate")
    ap.add_argument("--instructions", action="store_true", help="count instructions per request under callgrind instead of timing with wrk")
    ap.add_argument("--callgrind-out", metavar="DIR", help="with --instructions: keep each contender's callgrind dump of the counted requests in DIR (callgrind.SCENARIO.CONTENDER), for callgrind_annotate")
    ap.add_argument("--requests", type=int, default=4000, help="requests counted per contender with --instructions")
    args = ap.parse_args()
    wanted = {"proxy", "lua", "key-auth"} if args.scenario == "all" else {args.scenario}
    if "key-auth" in wanted and not args.apisix_root:
        if args.scenario == "key-auth":
            sys.exit("bench: the key-auth scenario needs --apisix-root DIR (an APISIX checkout)")
        print("bench: no --apisix-root: the key-auth scenario is skipped", file=sys.stderr)
        wanted.discard("key-auth")
    key_auth_src = None
    if "key-auth" in wanted:
        key_auth_src = os.path.join(args.apisix_root, "apisix", "plugins", "key-auth.lua")
        if not os.path.exists(key_auth_src):
            sys.exit(f"bench: {key_auth_src} is missing: --apisix-root must be an APISIX checkout")
    if args.instructions:
        # Under callgrind each request costs ~50x: fewer connections keep timeouts away.
        if args.connections == 32:
            args.connections = 8

    tools = ("valgrind", "callgrind_control", NGINX) if args.instructions else ("wrk", "taskset", NGINX)
    for tool in tools:
        if not shutil.which(tool) and not os.path.exists(tool):
            sys.exit(f"bench: {tool} is missing (apt-get install nginx wrk util-linux valgrind)")
    if not os.path.exists(args.moongate):
        sys.exit(f"bench: {args.moongate} is missing (cargo build --release)")
    if wanted & {"lua", "key-auth"}:
        for m in LUA_MODULES:
            if not os.path.exists(m):
                sys.exit(f"bench: {m} is missing (apt-get install libnginx-mod-http-lua)")

    inst = args.instructions
    tmp = tempfile.mkdtemp(prefix="moongate-bench-")
    backend_port = free_port()
    upstream = f"""upstream:
      type: roundrobin
      nodes:
        "127.0.0.1:{backend_port}": 1"""
    proxy_location = """proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";"""
    nginx_upstream = f"upstream backend {{ server 127.0.0.1:{backend_port}; keepalive 64; }}"
    running = []
    try:
        backend = Nginx(
            "backend",
            tmp,
            0,
            f'server {{ listen 127.0.0.1:{backend_port}; location / {{ return 200 "hello world\\n"; }} }}',
        )
        running.append(backend)
        wait_port(backend_port)
        scenarios = []
        start_timeout = 120 if inst else 10
        if "proxy" in wanted:
            nginx_port, moongate_port = free_port(), free_port()
            proxy = Nginx(
                "nginx",
                tmp,
                1,
                f"""{nginx_upstream}
    server {{
        listen 127.0.0.1:{nginx_port};
        location / {{
            {proxy_location}
        }}
    }}""",
                instrument=inst,
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
                instrument=inst,
            )
            running.append(mg)
            for p in (nginx_port, moongate_port):
                wait_port(p, start_timeout)
            scenarios.append(("proxy", [("nginx", proxy, nginx_port), ("moongate", mg, moongate_port)], "/hello", ()))
        if "lua" in wanted:
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
    {nginx_upstream}
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
                instrument=inst,
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
                plugin_files=[os.path.join(PLUGINS_DIR, f) for f in sorted(os.listdir(PLUGINS_DIR))],
                instrument=inst,
            )
            running.append(mg_lua)
            contenders = [("nginx+lua", nginx_lua, nginx_lua_port), ("moongate-lua", mg_lua, moongate_lua_port)]
            for name, _, port in contenders:
                wait_port(port, start_timeout)
                ready(name, port, check_lua, start_timeout)
            scenarios.append(("lua", contenders, "/lua", (f"apikey: {API_KEY}",)))
        if "key-auth" in wanted:
            nginx_ka_port, moongate_ka_port = free_port(), free_port()
            # nginx + lua: the same check key-auth makes (bench/lua/nginx/key_check.lua): the
            # `apikey` header looked up among the consumers' keys, 401 with a challenge when
            # absent or unknown, the consumer's name passed upstream.
            nginx_ka = Nginx(
                "nginx-key-auth",
                tmp,
                1,
                f"""lua_package_path "{NGINX_LUA_DIR}/?.lua;;";
    init_by_lua_block {{
        key_check = require("key_check").new({{ {{ username = "jack", key = "{API_KEY}" }} }})
    }}
    {nginx_upstream}
    server {{
        listen 127.0.0.1:{nginx_ka_port};
        location / {{
            access_by_lua_block {{
                key_check:access()
            }}
            {proxy_location}
        }}
    }}""",
                modules=LUA_MODULES,
                instrument=inst,
            )
            running.append(nginx_ka)
            mg_ka = Moongate(
                "moongate-key-auth",
                args.moongate,
                tmp,
                1,
                moongate_ka_port,
                f"""consumers:
  - username: jack
    plugins:
      key-auth:
        key: {API_KEY}
routes:
  - id: auth
    uri: /auth
    plugins:
      key-auth: {{}}
    {upstream}
#END
""",
                plugin_files=[key_auth_src],
                instrument=inst,
            )
            running.append(mg_ka)
            contenders = [("nginx+lua", nginx_ka, nginx_ka_port), ("moongate-keyauth", mg_ka, moongate_ka_port)]
            for name, _, port in contenders:
                wait_port(port, start_timeout)
                ready(name, port, check_key_auth, start_timeout)
            scenarios.append(("key-auth", contenders, "/auth", (f"apikey: {API_KEY}",)))

        if "prometheus" in wanted:
            plain_port, prom_port = free_port(), free_port()
            routes = """routes:
  - id: hello
    uri: /hello
    {plugins}{upstream}
#END
"""
            plain = Moongate("moongate", args.moongate, tmp, 1, plain_port,
                             routes.format(plugins="", upstream=upstream), instrument=inst)
            running.append(plain)
            prom = Moongate("moongate+prom", args.moongate, tmp, 1, prom_port,
                            routes.format(plugins="plugins:\n      prometheus: {}\n    ", upstream=upstream),
                            instrument=inst)
            running.append(prom)
            for p in (plain_port, prom_port):
                wait_port(p, start_timeout)
            scenarios.append(("prometheus", [("moongate", plain, plain_port), ("moongate+prom", prom, prom_port)], "/hello", ()))

        print(f"machine: {machine()}")
        try:
            rev = subprocess.run(["git", "-C", BENCH_DIR, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        except OSError:
            rev = "?"
        print(f"moongate: {args.moongate} (checkout {rev or '?'})")
        if inst:
            print(f"callgrind: {args.requests} requests per contender over {args.connections} connections after {args.requests // 4} warm-up requests")
        else:
            print(f"wrk -t1 -c{args.connections} -d{args.duration}s x {args.rounds} rounds, interleaved; backend nginx on CPU 0 with wrk, proxies on CPU 1")
        print()
        for title, contenders, path, headers in scenarios:
            if inst:
                count_scenario(title, contenders, path, headers, args)
            else:
                run_scenario(title, contenders, path, headers, args)
    finally:
        for c in reversed(running):
            c.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
