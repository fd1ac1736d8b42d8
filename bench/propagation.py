#!/usr/bin/env python3
"""Config propagation at scale: how fast an Admin API change is served, and what route churn
does to unrelated traffic, with 10,000 or 50,000 routes loaded.

For each route count (--routes, default 10000 and 50000) the script:

  1. seeds a fresh embedded store with N routes (`conf/apisix.yaml`: N-100 steady routes
     `/r/I` and 100 churn routes `/c/K/0`, all on one upstream: a backend nginx answering 200)
     and starts moongate (`traditional`, embedded store, `worker_processes: 1`), recording
     how long until the last route is served;
  2. runs steady traffic on the steady routes with wrk (random route per request, a fixed
     think time per connection, so the offered rate is the same in every phase), in rounds
     that alternate a quiet phase and a churn phase;
  3. during each churn phase, changes one churn route at a time through the Admin API at
     --rate changes per second: `PUT /apisix/admin/routes/cK` giving it a new uri
     `/c/K/SEQ`, then polls `GET /c/K/SEQ` on the data port until it answers 200.
     Propagation latency is the time from the Admin API's acknowledgement to that first 200.

It reports, per route count: load time, propagation p50/p99/max over every change, the p99
latency of the steady traffic in quiet and churn phases (median over the rounds), requests
and failures of each, and moongate's CPU use in each phase. A run with any failed request,
socket error, failed write or change not served within 5 s is refused (exit status 1).

Pinning (taskset): moongate on CPU 1 (its worker, Admin API and config sync share it: config
work competes with the data plane, the case that matters), the backend nginx, wrk and this
driver on CPU 0. Needs nginx, wrk and taskset (apt-get install nginx wrk util-linux).

With --store etcd the store is a local etcd (Debian's etcd-server, pinned to CPU 0 with the
driver), seeded through its JSON gateway, and moongate runs with `config_provider: etcd`: the
Admin API writes to etcd and the data plane follows etcd's watch.

Usage: bench/propagation.py [--routes N ...] [--rate 20] [--rounds 3] [--phase 20]
                            [--connections 16] [--think-ms 2] [--moongate PATH] [--json FILE]
                            [--store embedded|etcd] [--prewrite-store]
"""

import argparse
import base64
import http.client
import json
import os
import platform
import random
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

CLK_TCK = os.sysconf("SC_CLK_TCK")
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
ETCD = shutil.which("etcd") or "/usr/bin/etcd"
ADMIN_KEY = "bench-admin-key-0123456789abcdef"
CHURN_ROUTES = 100
POLL_TIMEOUT = 5.0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what, f, timeout):
    end = time.time() + timeout
    while time.time() < end:
        try:
            if f():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def status_of(port, path):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        c.request("GET", path)
        r = c.getresponse()
        r.read()
        return r.status
    finally:
        c.close()


class Backend:
    """nginx answering 200 on CPU 0."""

    def __init__(self, tmp, port):
        self.prefix = os.path.join(tmp, "backend")
        os.makedirs(os.path.join(self.prefix, "logs"), exist_ok=True)
        conf = os.path.join(self.prefix, "nginx.conf")
        with open(conf, "w") as f:
            f.write(
                f"""daemon off;
master_process on;
worker_processes 1;
worker_cpu_affinity 1;
error_log {self.prefix}/logs/error.log warn;
pid {self.prefix}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    server {{ listen 127.0.0.1:{port}; location / {{ return 200 "ok\\n"; }} }}
}}
"""
            )
        self.proc = subprocess.Popen([NGINX, "-p", self.prefix, "-c", conf], stderr=subprocess.DEVNULL)

    def stop(self):
        self.proc.send_signal(signal.SIGQUIT)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def store_items(n, backend_port):
    """The store keys and values of the same resources as `seed_yaml`, in key order."""
    items = [{"key": "/apisix/upstreams/u", "value": json.dumps({"id": "u", "nodes": {f"127.0.0.1:{backend_port}": 1}})}]
    items += [{"key": f"/apisix/routes/r{i}", "value": json.dumps({"id": f"r{i}", "uri": f"/r/{i}", "upstream_id": "u"})}
              for i in range(n - CHURN_ROUTES)]
    items += [{"key": f"/apisix/routes/c{k}", "value": json.dumps({"id": f"c{k}", "uri": f"/c/{k}/0", "upstream_id": "u"})}
              for k in range(CHURN_ROUTES)]
    items.sort(key=lambda i: i["key"])
    return items


def store_file(n, backend_port):
    """The embedded store's data file holding the same items as `seed_yaml` (its on-disk
    format: revision and items with their revisions), for builds whose seeding from
    apisix.yaml writes the store once per item (too slow to seed 50,000 routes)."""
    items = store_items(n, backend_port)
    for rev, i in enumerate(items, 1):
        i["create_revision"] = i["mod_revision"] = rev
    return json.dumps({"revision": len(items), "items": items})


def seed_yaml(n, backend_port):
    steady = n - CHURN_ROUTES
    lines = ["upstreams:", "  - id: u", "    nodes:", f'      "127.0.0.1:{backend_port}": 1', "routes:"]
    for i in range(steady):
        lines += [f"  - id: r{i}", f"    uri: /r/{i}", "    upstream_id: u"]
    for k in range(CHURN_ROUTES):
        lines += [f"  - id: c{k}", f"    uri: /c/{k}/0", "    upstream_id: u"]
    lines.append("#END")
    return "\n".join(lines) + "\n"


class Etcd:
    """A throwaway etcd (Debian's etcd-server) on CPU 0, seeded through its JSON gateway."""

    def __init__(self, tmp, n):
        self.port, peer = free_port(), free_port()
        self.dir = os.path.join(tmp, f"etcd-{n}")
        self.proc = subprocess.Popen(
            ["taskset", "-c", "0", ETCD, "--data-dir", self.dir, "--name", "bench",
             "--listen-client-urls", f"http://127.0.0.1:{self.port}",
             "--advertise-client-urls", f"http://127.0.0.1:{self.port}",
             "--listen-peer-urls", f"http://127.0.0.1:{peer}",
             "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
             "--initial-cluster", f"bench=http://127.0.0.1:{peer}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for("etcd", lambda: self.call("/v3/kv/range", {"key": b64("/")}) is not None, 30)

    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def call(self, path, body):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            c.request("POST", path, body=json.dumps(body))
            r = c.getresponse()
            text = r.read()
            if r.status != 200:
                raise RuntimeError(f"etcd {path}: {r.status} {text[:200]!r}")
            return json.loads(text)
        finally:
            c.close()

    def seed(self, items):
        # etcd takes at most 128 operations per transaction by default.
        for i in range(0, len(items), 100):
            ops = [{"requestPut": {"key": b64(it["key"]), "value": b64(it["value"])}} for it in items[i:i + 100]]
            self.call("/v3/kv/txn", {"success": ops})

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def b64(text):
    return base64.b64encode(text.encode()).decode()


class Moongate:
    def __init__(self, binary, tmp, n, port, admin_port, backend_port, prewrite=False, etcd=None):
        self.prefix = os.path.join(tmp, f"moongate-{n}")
        os.makedirs(os.path.join(self.prefix, "conf"), exist_ok=True)
        etcd_section = ""
        if etcd:
            etcd_section = f'  etcd:\n    host:\n      - "{etcd.url()}"\n    prefix: /apisix\n'
        with open(os.path.join(self.prefix, "conf", "config.yaml"), "w") as f:
            f.write(
                f"""apisix:
  node_listen:
    - ip: 127.0.0.1
      port: {port}
  enable_ipv6: false
  ssl:
    enable: false
nginx_config:
  worker_processes: 1
  error_log_level: warn
  http:
    enable_access_log: false
deployment:
  role: traditional
  role_traditional:
    config_provider: {"etcd" if etcd else "embedded"}
{etcd_section}  admin:
    admin_listen:
      ip: 127.0.0.1
      port: {admin_port}
    admin_key:
      - name: admin
        key: {ADMIN_KEY}
        role: admin
"""
            )
        if etcd:
            etcd.seed(store_items(n, backend_port))
        elif prewrite:
            os.makedirs(os.path.join(self.prefix, "data"), exist_ok=True)
            with open(os.path.join(self.prefix, "data", "store.json"), "w") as f:
                f.write(store_file(n, backend_port))
        else:
            with open(os.path.join(self.prefix, "conf", "apisix.yaml"), "w") as f:
                f.write(seed_yaml(n, backend_port))
        self.proc = subprocess.Popen(
            ["taskset", "-c", "1", binary, "run", "-p", self.prefix],
            stdout=subprocess.DEVNULL,
            stderr=open(os.path.join(self.prefix, "stderr.log"), "w"),
        )

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def wrk_script(tmp, steady, think_ms):
    path = os.path.join(tmp, "steady.lua")
    with open(path, "w") as f:
        f.write(
            f"""-- a random steady route per request, and a fixed think time per connection
math.randomseed(os.time())
request = function()
  return wrk.format("GET", "/r/" .. math.random(0, {steady - 1}))
end
delay = function()
  return {think_ms}
end
"""
        )
    return path


def run_wrk(port, script, duration, conns):
    cmd = ["taskset", "-c", "0", "wrk", "-t1", f"-c{conns}", f"-d{duration}s", "--latency", "-s", script,
           f"http://127.0.0.1:{port}"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    reqs = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}

    def pct(p):
        m = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out)
        return float(m.group(1)) * scale[m.group(2)] if m else float("nan")

    return {
        "requests": reqs,
        "failed": (int(non2xx.group(1)) if non2xx else 0) + (sum(int(x) for x in errors.groups()) if errors else 0),
        "p50_ms": pct(50),
        "p99_ms": pct(99),
    }


class Churner(threading.Thread):
    """Changes churn routes at `rate` per second until stopped, timing each propagation."""

    def __init__(self, port, admin_port, rate, start_seq):
        super().__init__(daemon=True)
        self.port, self.admin_port, self.rate = port, admin_port, rate
        self.seq = start_seq
        self.stop = threading.Event()
        self.samples = []
        self.failures = []

    def run(self):
        admin = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=10)
        data = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        interval = 1.0 / self.rate
        next_at = time.perf_counter()
        while not self.stop.is_set():
            self.seq += 1
            k = self.seq % CHURN_ROUTES
            uri = f"/c/{k}/{self.seq}"
            body = json.dumps({"uri": uri, "upstream_id": "u", "desc": f"change {self.seq}"})
            try:
                admin.request("PUT", f"/apisix/admin/routes/c{k}", body=body,
                              headers={"X-API-KEY": ADMIN_KEY, "Content-Type": "application/json"})
                r = admin.getresponse()
                r.read()
                acked = time.perf_counter()
                if r.status not in (200, 201):
                    self.failures.append(f"PUT c{k}: {r.status}")
                    continue
                while True:
                    data.request("GET", uri)
                    g = data.getresponse()
                    g.read()
                    now = time.perf_counter()
                    if g.status == 200:
                        self.samples.append((now - acked) * 1000)
                        break
                    if now - acked > POLL_TIMEOUT:
                        self.failures.append(f"{uri} not served after {POLL_TIMEOUT}s")
                        break
            except (OSError, http.client.HTTPException) as e:
                self.failures.append(f"change {self.seq}: {e!r}")
                admin.close()
                data.close()
            next_at += interval
            pause = next_at - time.perf_counter()
            if pause > 0:
                self.stop.wait(pause)
            else:
                next_at = time.perf_counter()


def percentile(xs, p):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def run_one(args, tmp, n, backend_port):
    port, admin_port = free_port(), free_port()
    etcd = Etcd(tmp, n) if args.store == "etcd" else None
    started = time.time()
    mg = Moongate(args.moongate, tmp, n, port, admin_port, backend_port, args.prewrite_store, etcd)
    try:
        wait_for("moongate's port", lambda: status_of(port, f"/r/{n - CHURN_ROUTES - 1}") == 200, 300)
        load_s = time.time() - started
        rss = rss_mib(mg.proc.pid)
        script = wrk_script(tmp, n - CHURN_ROUTES, args.think_ms)
        run_wrk(port, script, 3, args.connections)  # warm-up
        quiet, churn, samples, failures = [], [], [], []
        seq = 0
        for _ in range(args.rounds):
            before = cpu_ticks(mg.proc.pid)
            t0 = time.time()
            quiet.append(run_wrk(port, script, args.phase, args.connections))
            quiet[-1]["cpu"] = (cpu_ticks(mg.proc.pid) - before) / CLK_TCK / (time.time() - t0)
            ch = Churner(port, admin_port, args.rate, seq)
            before = cpu_ticks(mg.proc.pid)
            t0 = time.time()
            ch.start()
            churn.append(run_wrk(port, script, args.phase, args.connections))
            ch.stop.set()
            ch.join()
            churn[-1]["cpu"] = (cpu_ticks(mg.proc.pid) - before) / CLK_TCK / (time.time() - t0)
            churn[-1]["changes"] = len(ch.samples)
            seq = ch.seq
            samples += ch.samples
            failures += ch.failures
        return {
            "routes": n,
            "load_s": load_s,
            "rss_mib": rss,
            "rss_after_mib": rss_mib(mg.proc.pid),
            "propagation_ms": {
                "count": len(samples),
                "p50": percentile(samples, 50),
                "p99": percentile(samples, 99),
                "max": max(samples) if samples else float("nan"),
                "rate": len(samples) / (args.rounds * args.phase),
            },
            "quiet": quiet,
            "churn": churn,
            "failures": failures,
        }
    finally:
        mg.stop()
        if etcd:
            etcd.stop()


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
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    return f"{os.cpu_count()} CPUs ({cpu}), Linux {platform.release()}, load average {' '.join(load)} at start"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--routes", type=int, nargs="+", default=[10000, 50000])
    ap.add_argument("--rate", type=float, default=20, help="route changes per second")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--phase", type=int, default=20, help="seconds per quiet or churn phase")
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--think-ms", type=int, default=2, help="wrk delay between a connection's requests")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--moongate", default=os.path.join(root, "target", "release", "moongate"))
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--store", choices=["embedded", "etcd"], default="embedded",
                    help="etcd: start a local etcd (pinned to CPU 0), seed it, and run moongate on it")
    ap.add_argument("--prewrite-store", action="store_true",
                    help="write the store's data file directly instead of seeding it from apisix.yaml "
                         "(to compare with builds that seed one write at a time)")
    args = ap.parse_args()
    tools = ("wrk", "taskset", NGINX) + ((ETCD,) if args.store == "etcd" else ())
    for tool in tools:
        if not shutil.which(tool) and not os.path.exists(tool):
            sys.exit(f"propagation: {tool} is missing (apt-get install nginx wrk util-linux etcd-server)")
    if not os.path.exists(args.moongate):
        sys.exit(f"propagation: {args.moongate} is missing (cargo build --release)")

    print(f"machine: {machine()}")
    print(f"moongate: {args.moongate} on the {args.store} store; {args.rate:g} changes/s, {args.rounds} rounds of "
          f"{args.phase} s quiet + {args.phase} s churn, wrk -c{args.connections} think {args.think_ms} ms")
    results = []
    refused = False
    with tempfile.TemporaryDirectory(prefix="moongate-propagation-") as tmp:
        backend_port = free_port()
        backend = Backend(tmp, backend_port)
        try:
            wait_for("the backend", lambda: status_of(backend_port, "/") == 200, 10)
            for n in args.routes:
                r = run_one(args, tmp, n, backend_port)
                results.append(r)
                p = r["propagation_ms"]
                med = lambda phase, k: statistics.median(x[k] for x in r[phase])
                print(f"\n{n} routes: loaded in {r['load_s']:.1f} s, RSS {r['rss_mib']:.0f} MiB "
                      f"({r['rss_after_mib']:.0f} MiB after the churn)")
                print(f"  propagation over {p['count']} changes ({p['rate']:.1f}/s): "
                      f"p50 {p['p50']:.2f} ms, p99 {p['p99']:.2f} ms, max {p['max']:.2f} ms")
                for phase in ("quiet", "churn"):
                    reqs = sum(x["requests"] for x in r[phase])
                    failed = sum(x["failed"] for x in r[phase])
                    p99s = ", ".join(f"{x['p99_ms']:.2f}" for x in r[phase])
                    print(f"  {phase:5}: p50 {med(phase, 'p50_ms'):.2f} ms, p99 {med(phase, 'p99_ms'):.2f} ms "
                          f"(rounds: {p99s}), {reqs} requests, {failed} failed, "
                          f"moongate CPU {med(phase, 'cpu') * 100:.0f} %")
                    refused |= failed > 0
                if r["failures"]:
                    print(f"  {len(r['failures'])} failed change(s): {r['failures'][:5]}")
                    refused = True
        finally:
            backend.stop()
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine(), "args": vars(args), "results": results}, f, indent=2)
    if refused:
        print("\nREFUSED: a request or a change failed; these figures are not a result")
        sys.exit(1)


if __name__ == "__main__":
    main()
