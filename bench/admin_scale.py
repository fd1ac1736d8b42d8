#!/usr/bin/env python3
"""Admin API calls that read many resources, with many routes stored: what a page of
`GET /apisix/admin/routes` and an upstream `DELETE` (which first checks that nothing uses the
upstream) cost with 10,000 or 50,000 routes, on the embedded store and on etcd.

For each store and route count the script seeds the store the way bench/propagation.py does
(N routes `/r/I` on one upstream `u`, plus an unused upstream), starts moongate
(`traditional`, `worker_processes: 1`) and times, from the client, each of:

  page 1       GET /apisix/admin/routes?page=1&page_size=10
  deep page    GET /apisix/admin/routes?page=<middle>&page_size=25
  filtered     GET /apisix/admin/routes?uri=/r/1234$     (a regex over every route's uri)
  one route    GET /apisix/admin/routes/r123             (one key: the reference)
  delete unused upstream   DELETE /apisix/admin/upstreams/spare (PUT again between rounds,
                           untimed)
  refused delete           DELETE /apisix/admin/upstreams/u (every route uses it: 400)

--rounds times each (default 20), after a few untimed calls, and reports the median and the
90th percentile in milliseconds, and moongate's resident memory after the calls. Every answer is checked (status, total, page length); a
wrong answer stops the run.

Usage: bench/admin_scale.py [--routes N ...] [--store embedded|etcd ...] [--rounds 20]
                            [--moongate PATH] [--json FILE]
"""

import argparse
import http.client
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import propagation as p  # noqa: E402  (the store seeding and process helpers)

KEY = p.ADMIN_KEY


def call(port, method, path, body=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        data = json.dumps(body) if body is not None else None
        start = time.perf_counter()
        c.request(method, path, body=data, headers={"X-API-KEY": KEY})
        r = c.getresponse()
        text = r.read()
        took = time.perf_counter() - start
        return r.status, text, took
    finally:
        c.close()


def timed(port, method, path, check, rounds, before=None):
    for _ in range(3):
        if before:
            before()
        status, text, _ = call(port, method, path)
        check(status, text)
    times = []
    for _ in range(rounds):
        if before:
            before()
        status, text, took = call(port, method, path)
        check(status, text)
        times.append(took * 1000)
    times.sort()
    return {
        "median_ms": round(statistics.median(times), 2),
        "p90_ms": round(times[int(0.9 * (len(times) - 1))], 2),
    }


def expect(status, total=None, page=None):
    def check(s, text):
        if s != status:
            raise SystemExit(f"expected {status}, got {s}: {text[:300]!r}")
        if total is not None or page is not None:
            v = json.loads(text)
            if total is not None and v.get("total") != total:
                raise SystemExit(f"expected total {total}, got {v.get('total')}")
            if page is not None and len(v.get("list", [])) != page:
                raise SystemExit(f"expected {page} items, got {len(v.get('list', []))}")
    return check


def run(binary, store, n, rounds, tmp):
    backend_port = p.free_port()
    port, admin_port = p.free_port(), p.free_port()
    etcd = p.Etcd(tmp, n) if store == "etcd" else None
    mg = p.Moongate(binary, tmp, n, port, admin_port, backend_port, prewrite=(store == "embedded"), etcd=etcd)
    try:
        p.wait_for("admin API", lambda: call(admin_port, "GET", "/apisix/admin/routes/r0")[0] == 200, 120)
        spare = {"nodes": {f"127.0.0.1:{backend_port}": 1}}
        status, text, _ = call(admin_port, "PUT", "/apisix/admin/upstreams/spare", spare)
        if status not in (200, 201):
            raise SystemExit(f"PUT spare: {status} {text[:200]!r}")
        put_spare = lambda: call(admin_port, "PUT", "/apisix/admin/upstreams/spare", spare)  # noqa: E731
        mid = n // 50
        out = {
            "page 1": timed(admin_port, "GET", "/apisix/admin/routes?page=1&page_size=10",
                            expect(200, total=n, page=10), rounds),
            "deep page": timed(admin_port, "GET", f"/apisix/admin/routes?page={mid}&page_size=25",
                               expect(200, total=n, page=25), rounds),
            "filtered": timed(admin_port, "GET", "/apisix/admin/routes?uri=/r/1234$",
                              expect(200), rounds),
            "one route": timed(admin_port, "GET", "/apisix/admin/routes/r123", expect(200), rounds),
            "delete unused upstream": timed(admin_port, "DELETE", "/apisix/admin/upstreams/spare",
                                            expect(200), rounds, before=put_spare),
            "refused delete": timed(admin_port, "DELETE", "/apisix/admin/upstreams/u", expect(400), rounds),
        }
        return out, p.rss_mib(mg.proc.pid)
    finally:
        mg.stop()
        if etcd:
            etcd.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--routes", type=int, nargs="+", default=[10000, 50000])
    ap.add_argument("--store", nargs="+", default=["embedded", "etcd"], choices=["embedded", "etcd"])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--moongate", default=os.path.join(os.path.dirname(__file__), "..", "target", "release", "moongate"))
    ap.add_argument("--json")
    args = ap.parse_args()
    results = {"machine": p.machine(), "moongate": os.path.abspath(args.moongate), "runs": []}
    with tempfile.TemporaryDirectory(prefix="moongate-admin-scale-") as tmp:
        for store in args.store:
            for n in args.routes:
                r, rss = run(args.moongate, store, n, args.rounds, tmp)
                results["runs"].append({"store": store, "routes": n, "calls": r, "rss_mib": rss})
                print(f"{store} {n} routes (moongate RSS {rss} MiB after the calls):")
                for name, v in r.items():
                    print(f"  {name:24} median {v['median_ms']:9.2f} ms   p90 {v['p90_ms']:9.2f} ms")
                sys.stdout.flush()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
