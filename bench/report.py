#!/usr/bin/env python3
"""Turns the JSON lines of bench/driver.py into RESULTS.md.

    python3 bench/report.py bench/.work/results.jsonl bench/RESULTS.md

Standard library only. Every number in the report comes from the results file.
"""

import json
import os
import re
import sys
from collections import defaultdict

# The PHP implementation measured on this machine (php-fpm with 8 children + nginx, Laravel 8.83 +
# Sanctum 3.3; wrk -t2 -c64 -d12s with one token on one conversation of 5,933 messages; median of
# four runs): primary keys only, and with schema/recommended-indexes.sql. And shopchat's goals for
# the same one-client runs.
PHP = {"get-new-messages": 99.0, "messages": 22.0, "conversations": 40.0}
PHP_INDEXED = {"get-new-messages": 110.0, "messages": 55.0, "conversations": 46.0}
PHP_P99_MS = {"get-new-messages": 815, "messages": 1970, "conversations": 1800}
ANCHOR_GOAL = {"get-new-messages": 17_500, "messages": 2_750, "conversations": 4_000}
GNM_TARGET_RPS = 17_500
GNM_TARGET_P99_MS = 5.0
# shopchat's own CPU per poll answered without a statement, microseconds.
POLL_CPU_GOAL_US = 40.0
# Pages at 64 connections against the database's own ceiling for their statements.
CEILING_SHARE_GOAL = 0.90
RSS_RUN_MB = 64
RSS_IDLE_MB = 20
TARGET_CONNECTIONS = 64
ENDPOINT_TITLES = {
    "get-new-messages": "get-new-messages/{cid}/{last} — the poll, nothing new",
    "messages": "messages/{id} — page 1",
    "conversations": "conversations — page 1",
    "insert-message": "insert-message",
    "create-conversation": "create-conversation",
}
VARIANT_TITLES = {"pk": "primary keys only", "recommended": "recommended indexes"}


def load(path):
    rows = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                rows.append(json.loads(line))
    return rows


def fmt_int(x):
    return f"{x:,.0f}" if x is not None else "–"


def fmt_ms(x):
    if x is None:
        return "–"
    if x >= 100:
        return f"{x:,.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def mb(kb):
    return f"{kb / 1024:.1f}" if kb else "–"


def per_req(total, requests, scale=1.0):
    if not requests:
        return None
    return total * scale / requests


def cpu_us(r, proc):
    return r["cpu"][proc] * 1e6 / r["requests"] if r and r["requests"] else None


def machine_share(r):
    """(busy cores, shopchat µs, mariadbd µs, load generator µs, statements) per request of run r."""
    busy = r["cpu"]["busy"] / r["cpu"]["wall"] if r["cpu"].get("wall") else 0
    q = per_req(r["db"].get("Questions", 0), r["requests"]) or 0
    return busy, cpu_us(r, "shopchat"), cpu_us(r, "mariadbd"), cpu_us(r, "children"), q


APP_USERS_GOAL = 50_000
PHP_APP_USERS = 500


def app_traffic():
    """What RESULTS-apptraffic.md (bench/apptraffic.sh, run separately) says: the largest number of
    users served, its commit, and why the next step was not served; None without the file."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS-apptraffic.md")
    try:
        text = open(path, encoding="utf-8").read()
    except OSError:
        return None
    best = re.search(r"no message missed: ([\d,]+)\.", text)
    commit = re.search(r"at commit `([0-9a-f]+)`", text)
    why = re.search(r"^\*\*Why not .*$", text, re.M)
    if not best:
        return None
    return {"users": int(best.group(1).replace(",", "")), "commit": commit.group(1) if commit else "?",
            "why": why.group(0) if why else None}


def heap_profile():
    """The headline of RESULTS-heap.md (`APP_HEAPTRACK=1 bench/apptraffic.sh`, run separately):
    what a heap profile found still allocated in an idle shopchat after a load; None without it."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS-heap.md")
    try:
        text = open(path, encoding="utf-8").read()
    except OSError:
        return None
    found = re.search(r"^\*\*What outlives the load.*$", text, re.M)
    return found.group(0) if found else None


def unmet_reasons(w, A, S, C, best, idle_after=(), idle_start_kb=0, app=None):
    """For each target not met, the measured reason and what would meet it, from this run's numbers."""
    items = []
    if app and app["users"] < APP_USERS_GOAL:
        items.append(f"**Simulated app users: {fmt_int(app['users'])}, goal {fmt_int(APP_USERS_GOAL)}** "
                     f"(RESULTS-apptraffic.md, commit `{app['commit']}`). "
                     + (app["why"] or "See RESULTS-apptraffic.md."))
    cores = 2
    for ep, goal in ANCHOR_GOAL.items():
        r = A.get(ep)
        if not r or not r["requests"] or r["rps"] >= goal:
            continue
        busy, a, b, k, q = machine_share(r)
        text = (f"**{ep}, one client: {fmt_int(r['rps'])} req/s, goal {fmt_int(goal)}.** The {cores} "
                f"cores were {busy:.2f} busy, shared by shopchat ({fmt_int(a)} µs of CPU per request), "
                f"mariadbd ({fmt_int(b)} µs; {q:.2f} statements per request) and wrk ({fmt_int(k)} µs).")
        if a:
            text += (f" shopchat's own {fmt_int(a)} µs per request allow ≈ {fmt_int(cores * 1e6 / a)} req/s "
                     f"on {cores} cores of its own; on these shared cores the database's and the load "
                     "generator's CPU per request come on top.")
        items.append(text)
    g = A.get("get-new-messages")
    if g and g["latency_ms"]["p99"] >= GNM_TARGET_P99_MS:
        items.append(
            f"**get-new-messages p99, one client: {fmt_ms(g['latency_ms']['p99'])} ms, goal < "
            f"{GNM_TARGET_P99_MS:g} ms.** wrk is a closed loop: 64 connections on saturated cores queue "
            f"behind each other (mean latency = connections / throughput = {fmt_ms(64 * 1000 / g['rps'])} "
            f"ms, p50 {fmt_ms(g['latency_ms']['p50'])} ms); the tail is scheduling on 2 shared cores.")
    if g and g["requests"]:
        us = cpu_us(g, "shopchat")
        q = per_req(g["db"].get("Questions", 0), g["requests"]) or 0
        if us and us > POLL_CPU_GOAL_US:
            items.append(
                f"**CPU per statement-free poll: {us:.1f} µs, goal ≤ {POLL_CPU_GOAL_US:g} µs** "
                f"({q:.3f} statements per poll, the watcher's scans included). See the profile below "
                "for where it goes.")
    for ep in ("messages", "conversations"):
        r = S.get((best, ep, TARGET_CONNECTIONS))
        full = C.get((best, f"{ep}-full", TARGET_CONNECTIONS))
        if not r or not full or not full["rps"] or r["rps"] >= CEILING_SHARE_GOAL * full["rps"]:
            continue
        busy, a, b, k, q = machine_share(r)
        hot = C.get((best, f"{ep}-hot", TARGET_CONNECTIONS))
        fit = 2e6 / (a + b + k) if a and b and (a + b + k) else 0
        items.append(
            f"**{ep}: {r['rps'] / full['rps']:.0%} of the database's ceiling, goal ≥ "
            f"{CEILING_SHARE_GOAL:.0%}.** shopchat {fmt_int(r['rps'])} req/s, the database alone "
            f"{fmt_int(full['rps'])} req/s for the same statements"
            + (f" ({fmt_int(hot['rps'])} req/s for the statements left when the token cache hits, "
               f"{r['rps'] / hot['rps']:.0%})" if hot and hot["rps"] else "")
            + f"; the cores were {busy:.2f} busy, shopchat {fmt_int(a)} µs, mariadbd {fmt_int(b)} µs "
            f"({q:.2f} statements) and wrk {fmt_int(k)} µs per request"
            + (f", so the 2 cores fit about {fmt_int(fit)} requests/s" if fit else "")
            + ": on shared cores shopchat's own CPU is what the database alone does not pay. The "
            "ceiling itself moves between machines of the same kind, which measured the same "
            "statements at half or twice the cost (bench/README.md, \"Last results\").")
    for b in idle_after:
        if b["rss_kb"] / 1024 < RSS_IDLE_MB or not b.get("anon_kb"):
            continue
        trail = b.get("trail") or []
        first = trail[0][1] if trail else b["rss_kb"]
        items.append(
            f"**RSS idle after the load ({VARIANT_TITLES.get(b['variant'], b['variant'])}): "
            f"{mb(b['rss_kb'])} MB, goal < {RSS_IDLE_MB} MB.** Of it, {mb(b['file_kb'])} MB are the "
            f"binary's code pages (file-backed; {mb(idle_start_kb)} MB was the whole RSS after start) and "
            f"{mb(b['anon_kb'])} MB heap and stacks; the idle releases took it from {mb(first)} MB one "
            f"second after the last request to {mb(b['rss_kb'])} MB."
            + " What is still allocated then: \"Memory\" below.")
    if not items:
        return
    w("### Targets not met: the measured reason")
    w("")
    for t in items:
        w(f"- {t}")
    w("")


def main(src, dst):
    rows = load(src)
    env = next((r for r in rows if r["kind"] == "env"), {})
    end = next((r for r in rows if r["kind"] == "end"), {})
    shop = [r for r in rows if r["kind"] == "shopchat"]
    ceil = [r for r in rows if r["kind"] == "ceiling"]
    idle = [r for r in rows if r["kind"] == "idle"]
    checks = [r for r in rows if r["kind"] == "check"]
    indexes = [r for r in rows if r["kind"] == "index"]
    perfs = [r for r in rows if r["kind"] == "perf"]
    anchors = [r for r in rows if r["kind"] == "anchor"]
    variants = env.get("variants") or sorted({r["variant"] for r in shop})
    endpoints = env.get("endpoints") or sorted({r["endpoint"] for r in shop})
    conns = env.get("connections") or sorted({r["connections"] for r in shop})

    S = {(r["variant"], r["endpoint"], r["connections"]): r for r in shop}
    C = {(r["variant"], r["scenario"], r["connections"]): r for r in ceil}
    out = []
    w = out.append

    # ------------------------------------------------------------ header
    w("# shopchat benchmark results")
    w("")
    dirty = " (with uncommitted changes)" if env.get("dirty") else ""
    w(f"Written by `bench/run.sh` on {env.get('date', '?')} from commit `{env.get('commit', '?')}` "
      f"(branch `{env.get('branch', '?')}`){dirty}; the whole run took "
      f"{end.get('total_seconds', 0) // 60} min {end.get('total_seconds', 0) % 60} s. "
      "How to run it and what each number means: [README.md](README.md).")
    w("")
    la0 = env.get("loadavg_start") or [0, 0, 0]
    la1 = end.get("loadavg_end") or [0, 0, 0]
    other = [r["cpu"]["other"] / r["cpu"]["wall"] for r in shop if r["cpu"].get("wall")]
    other_avg = sum(other) / len(other) if other else 0
    others = ("other work competed for them" if other_avg >= 0.1
              else "nothing else ran to speak of")
    w(f"> **Indicative numbers.** {env.get('cores', '?')} cores, shared: the load generator (wrk), "
      f"shopchat and MariaDB run on the same cores, and {others} (load average {la0[0]:.1f} at the "
      f"start, {la1[0]:.1f} at the end; on average {other_avg:.2f} of the {env.get('cores', '?')} "
      "cores were busy with processes other than shopchat, mariadbd and the load generator during "
      "the measured runs — see the `other` column of the CPU table). Absolute figures depend on the "
      "machine: the DB ceiling columns, measured in the same run, are the yardstick for shopchat's.")
    w("")

    # ------------------------------------------------------------ set-up
    rws = env.get("rows", {})
    cl = env.get("conversation_length", {})
    w("## Set-up")
    w("")
    w(f"- **Machine**: {env.get('cpu', '?')}, {env.get('cores', '?')} cores, {env.get('mem_gb', '?')} GB, "
      f"Linux {env.get('kernel', '?')}. {env.get('rustc', '')}; {env.get('wrk', '')}.")
    w(f"- **Database**: MariaDB {env.get('mariadb', '?')}, private server on 127.0.0.1 "
      f"(`scripts/private-mariadb.sh`), buffer pool {env.get('buffer_pool_mb', '?')} MB (the whole "
      "data set stays in memory), `innodb_flush_log_at_trx_commit=2`.")
    gen = env.get("generate_seconds", 0)
    made = f"in {gen} s" if gen else "by an earlier run and reused"
    w(f"- **Data set** (generated by SQL, `bench/sql/generate.sql`, {made}): "
      f"{fmt_int(rws.get('users'))} users, {fmt_int(rws.get('tokens'))} tokens, "
      f"{fmt_int(rws.get('conversations'))} conversations, {fmt_int(rws.get('messages'))} messages, "
      f"{fmt_int(rws.get('shops'))} shops, {fmt_int(rws.get('products'))} products. Messages per "
      f"conversation (Zipf-like): median {cl.get('p50')}, p90 {cl.get('p90')}, p99 {cl.get('p99')}, "
      f"max {fmt_int(cl.get('max'))}; the ten longest: {', '.join(fmt_int(x) for x in cl.get('top10', []))}.")
    settings = next((r.get("settings") for r in idle if r.get("settings")), {}) or {}
    shown = ", ".join(f"`{k}={v}`" for k, v in sorted(settings.items()))
    w(f"- **shopchat**: release build, started by the driver with {shown}; every other setting at its "
      "default (`SHOPCHAT_DB_POOL_SIZE=10`, `SHOPCHAT_AUTH_CACHE_MS=1000`, "
      "`SHOPCHAT_TOKEN_TOUCH_SECONDS=60`, log level `info`: one log line per request, written to a "
      "file). `SHOPCHAT_RATE_LIMIT=0` turns the per-user throttle off: the load generator replays "
      "thousands of users far faster than any app would.")
    w(f"- **Load**: wrk, `min(2, connections)` threads, {env.get('duration', '?'):g} s per run after a "
      f"{env.get('warmup', '?'):g} s warm-up per endpoint, connections {', '.join(str(c) for c in conns)}. "
      f"Each endpoint replays {fmt_int(env.get('sample'))} distinct clients (each its own token, "
      "`bench/sql/clients.sql`): polls and message pages go to conversations picked by activity "
      "(long conversations more often), each by one of its two parties; a poll asks for messages "
      "above the conversation's newest id (\"nothing new\"). Writes go to other conversations than "
      "reads. Latencies are wrk's (closed loop: a connection sends its next request when the answer "
      "arrived).")
    w(f"- **DB ceiling**: `dbceiling` (`bench/tools/`) sends the endpoint's own statements (same SQL text, "
      "prepared, same binds) straight to MariaDB on as many connections as wrk has, "
      f"{env.get('db_duration', '?'):g} s per run. `full` = every statement of a request whose "
      "per-request caches miss (the token lookup with its user, participants); `hot` = only the statements left "
      "when those hit. Both leave out the 60 s caches (translations, settings, uploads) and the "
      "once-a-minute `last_used_at` touch. The `% of ceiling` column is shopchat's req/s divided by "
      "the `full` ceiling.")
    w("")

    # ------------------------------------------------------------ targets
    w("## Targets")
    w("")
    best = "recommended" if "recommended" in variants else variants[-1]
    A = {r["endpoint"]: r for r in anchors}
    w("One client (the PHP comparison): wrk -t2 -c64, 12 s, one token, one conversation of about "
      "5,933 messages (`bench/sql/clients.sql`, set `hot`), recommended indexes. PHP on this machine "
      "the same day (php-fpm, 8 children, + nginx; median of four runs): with primary keys only / with "
      "the same indexes. Pages at the database's ceiling: the many-clients runs below, 64 connections, "
      f"{VARIANT_TITLES.get(best, best)}.")
    w("")
    w("| target | PHP (pk / indexed) | goal | measured | met? |")
    w("|---|---|---|---|---|")

    def met(ok):
        return "**yes**" if ok else "**no**"

    for ep, goal in ANCHOR_GOAL.items():
        r = A.get(ep)
        if not r:
            continue
        q = per_req(r["db"].get("Questions", 0), r["requests"]) or 0
        w(f"| {ENDPOINT_TITLES.get(ep, ep).split(' — ')[0]}, one client: req/s | {PHP[ep]:g} / "
          f"{PHP_INDEXED[ep]:g} | ≥ {fmt_int(goal)} | {fmt_int(r['rps'])} ({r['rps'] / PHP_INDEXED[ep]:.0f}×; "
          f"p99 {fmt_ms(r['latency_ms']['p99'])} ms; {q:.3f} statements/request; shopchat "
          f"{cpu_us(r, 'shopchat'):.1f} µs CPU/request) | {met(r['rps'] >= goal)} |")
    g = A.get("get-new-messages")
    if g:
        w(f"| get-new-messages, one client: p99 | {PHP_P99_MS['get-new-messages']} ms | < "
          f"{GNM_TARGET_P99_MS:g} ms | {fmt_ms(g['latency_ms']['p99'])} ms "
          f"| {met(g['latency_ms']['p99'] < GNM_TARGET_P99_MS)} |")
        us = cpu_us(g, "shopchat")
        w(f"| shopchat CPU per poll answered without a statement | – | ≤ {POLL_CPU_GOAL_US:g} µs "
          f"| {us:.1f} µs | {met(us <= POLL_CPU_GOAL_US)} |")
    for ep in ("messages", "conversations"):
        r = S.get((best, ep, TARGET_CONNECTIONS))
        full = C.get((best, f"{ep}-full", TARGET_CONNECTIONS))
        if r and full and full["rps"]:
            share = r["rps"] / full["rps"]
            w(f"| {ep}, many clients, c=64: share of the DB ceiling | – | ≥ {CEILING_SHARE_GOAL:.0%} "
              f"| {share:.0%} ({fmt_int(r['rps'])} of {fmt_int(full['rps'])} req/s) "
              f"| {met(share >= CEILING_SHARE_GOAL)} |")
    err_best = [r for r in shop + anchors if r["variant"] == best and r["errors_total"]]
    w(f"| no errors, {VARIANT_TITLES.get(best, best)} | – | 0 | "
      f"{fmt_int(sum(r['errors_total'] for r in err_best))} | {met(not err_best)} |")
    peak = max((r["peak_rss_kb"] or 0 for r in shop), default=0)
    peak_run = max(shop, key=lambda r: r["peak_rss_kb"] or 0) if shop else None
    if peak_run:
        w(f"| RSS during the runs | – | < {RSS_RUN_MB} MB | {mb(peak)} MB (peak; {peak_run['variant']} "
          f"{peak_run['endpoint']} c={peak_run['connections']}) | {met(peak / 1024 < RSS_RUN_MB)} |")
    idle_start = [r for r in idle if r["when"] == "start"]
    if idle_start:
        worst = max(r["rss_kb"] for r in idle_start)
        w(f"| RSS idle (after start) | – | < {RSS_IDLE_MB} MB | {mb(worst)} MB | {met(worst / 1024 < RSS_IDLE_MB)} |")
    idle_after = [r for r in idle if r["when"] == "after load"]
    for r in idle_after:
        quiet = r.get("idle_seconds") or 2
        w(f"| RSS idle after the load ({VARIANT_TITLES.get(r['variant'], r['variant'])}, {quiet} s "
          f"without requests) | – | < {RSS_IDLE_MB} MB | {mb(r['rss_kb'])} MB "
          f"| {met(r['rss_kb'] / 1024 < RSS_IDLE_MB)} |")
    app = app_traffic()
    if app:
        w(f"| simulated app users (open loop), p99 < 50 ms, no errors | ~{PHP_APP_USERS} | ≥ "
          f"{fmt_int(APP_USERS_GOAL)} | {fmt_int(app['users'])} (RESULTS-apptraffic.md, commit "
          f"`{app['commit']}`) | {met(app['users'] >= APP_USERS_GOAL)} |")
    w("")
    w("Simulated app users (open loop, the realistic mix): `bench/apptraffic.sh`, results in "
      "[RESULTS-apptraffic.md](RESULTS-apptraffic.md).")
    w("")

    unmet_reasons(w, A, S, C, best, idle_after,
                  max((r["rss_kb"] for r in idle if r["when"] == "start"), default=0), app)

    # ------------------------------------------------------------ per endpoint
    w("## Results per endpoint")
    w("")
    w("`req/s`, `p50`, `p99` and `errors` are wrk's (errors = connect/read/write errors, timeouts "
      "after 30 s and answers other than 2xx/3xx); `peak RSS` = highest VmRSS of shopchat sampled every "
      "50 ms during the run. `q/req` = statements MariaDB executed per shopchat request "
      "(`Questions` delta / requests: shows which caches hit), `rows/req` = InnoDB rows read per "
      "request (sum of the `Handler_read_*` counters: index lookups and rows scanned; full scans show up here). CPU columns: CPU time of shopchat and of mariadbd per "
      "request (µs).")
    w("")
    for ep in endpoints:
        w(f"### {ENDPOINT_TITLES.get(ep, ep)}")
        w("")
        scen = [s for s in ("full", "hot") if any(k[1] == f"{ep}-{s}" for k in C)]
        head = ["index", "conns", "req/s", "p50 ms", "p99 ms", "errors", "peak RSS MB"]
        for s in scen:
            head += [f"DB {s} req/s", f"DB {s} p99 ms"]
        head += ["% of ceiling", "q/req", "rows/req", "CPU µs/req shopchat", "CPU µs/req mariadbd"]
        w("| " + " | ".join(head) + " |")
        w("|" + "---|" * len(head))
        for v in variants:
            for c in conns:
                r = S.get((v, ep, c))
                if not r:
                    continue
                cells = [VARIANT_TITLES.get(v, v), str(c), fmt_int(r["rps"]), fmt_ms(r["latency_ms"]["p50"]),
                         fmt_ms(r["latency_ms"]["p99"]), fmt_int(r["errors_total"]), mb(r["peak_rss_kb"])]
                for s in scen:
                    cr = C.get((v, f"{ep}-{s}", c))
                    if cr:
                        err = f" ({cr['errors']} err)" if cr["errors"] else ""
                        cells += [fmt_int(cr["rps"]) + err, fmt_ms(cr["latency_us"]["p99"] / 1000)]
                    else:
                        cells += ["–", "–"]
                full = C.get((v, f"{ep}-full", c))
                cells.append(f"{100 * r['rps'] / full['rps']:.0f} %" if full and full["rps"] else "–")
                q = per_req(r["db"].get("Questions", 0), r["requests"])
                rr = per_req(r["db"].get("rows_examined", 0), r["requests"])
                cells += [f"{q:.2f}" if q is not None else "–", fmt_int(rr) if rr is not None else "–",
                          fmt_int(per_req(r["cpu"]["shopchat"], r["requests"], 1e6)),
                          fmt_int(per_req(r["cpu"]["mariadbd"], r["requests"], 1e6))]
                w("| " + " | ".join(cells) + " |")
        w("")
        problems = [r for r in shop if r["endpoint"] == ep and (r["errors_total"] or r["log_problems"])]
        for r in problems:
            e = r["errors"]
            kinds = ", ".join(f"{k} {v}" for k, v in e.items() if v)
            line = f"- {VARIANT_TITLES.get(r['variant'], r['variant'])}, {r['connections']} connections: "
            if kinds:
                line += f"errors: {kinds}. "
            if r["log_problems"]:
                line += f"{r['log_problems']} WARN/ERROR log lines, first: `{(r['first_log_problem'] or '')[:200]}`"
            w(line)
        if problems:
            w("")

    # ------------------------------------------------------------ idle RSS
    w("## Memory")
    w("")
    w("| index variant | idle RSS after start | idle RSS after the load | of which heap and stacks (RssAnon) | of which code pages (RssFile) | VmHWM (lifetime peak) | RSS seconds after the last request |")
    w("|---|---|---|---|---|---|---|")
    for v in variants:
        a = next((r for r in idle if r["variant"] == v and r["when"] == "start"), None)
        b = next((r for r in idle if r["variant"] == v and r["when"] == "after load"), None)
        trail = ", ".join(f"{s} s: {mb(kb)}" for s, kb in (b.get("trail") or [])) if b else ""
        w(f"| {VARIANT_TITLES.get(v, v)} | {mb(a['rss_kb']) if a else '–'} MB | "
          f"{mb(b['rss_kb']) if b else '–'} MB | {mb(b.get('anon_kb')) if b else '–'} MB | "
          f"{mb(b.get('file_kb')) if b else '–'} MB | {mb(b.get('hwm_kb')) if b else '–'} MB | "
          f"{trail or '–'} |")
    w("")
    w("shopchat drops expired cache entries and trims its heap after 2 s without requests, and drops "
      "every cache that only saves statements after 60 s (`src/ops/memory.rs`). Code pages are the "
      "binary's own, mapped from the file: shared and given up by the kernel under memory pressure.")
    heap = heap_profile()
    if heap:
        w("")
        w(f"{heap} ([RESULTS-heap.md](RESULTS-heap.md), `APP_HEAPTRACK=1 bench/apptraffic.sh`)")
    w("")

    # ------------------------------------------------------------ where the time goes
    w("## Where the time goes")
    w("")
    w(f"### CPU per request at {TARGET_CONNECTIONS} connections")
    w("")
    w("CPU seconds spent during the run divided by the requests served, per process: shopchat, "
      "mariadbd, the load generator (wrk), and everything else on the machine (`other`: it competes "
      "for the same 2 cores). `cores busy` = all CPU time / wall "
      "time (2.0 = the machine is saturated).")
    w("")
    w("| endpoint | index | req/s | shopchat µs | mariadbd µs | wrk µs | other µs | cores busy | shopchat share of our CPU |")
    w("|---|---|---|---|---|---|---|---|---|")
    for ep in endpoints:
        for v in variants:
            r = S.get((v, ep, TARGET_CONNECTIONS))
            if not r or not r["requests"]:
                continue
            cpu, n = r["cpu"], r["requests"]
            ours = cpu["shopchat"] + cpu["mariadbd"] + cpu["children"]
            w(f"| {ep} | {VARIANT_TITLES.get(v, v)} | {fmt_int(r['rps'])} | {fmt_int(cpu['shopchat'] * 1e6 / n)} | "
              f"{fmt_int(cpu['mariadbd'] * 1e6 / n)} | {fmt_int(cpu['children'] * 1e6 / n)} | "
              f"{fmt_int(max(cpu['other'], 0) * 1e6 / n)} | {cpu['busy'] / cpu['wall']:.2f} | "
              f"{100 * cpu['shopchat'] / ours:.0f} % |" if ours else "")
    w("")

    w("### Statements per request")
    w("")
    w("What shopchat actually sent to MariaDB per request (from the server's status counters), next to "
      "what the endpoint's statements are when no per-request cache hits (the DB ceiling's `full` "
      f"sequence). At {TARGET_CONNECTIONS} connections:")
    w("")
    w("| endpoint | index | shopchat: statements/req | SELECT | INSERT | UPDATE | rows read/req | `full` sequence: statements/req |")
    w("|---|---|---|---|---|---|---|---|")
    for ep in endpoints:
        for v in variants:
            r = S.get((v, ep, TARGET_CONNECTIONS))
            full = C.get((v, f"{ep}-full", TARGET_CONNECTIONS))
            if not r or not r["requests"]:
                continue
            n = r["requests"]
            d = r["db"]
            seq = (sum(s["count"] for s in full["statements"]) / full["requests"]) if full and full["requests"] else None
            w(f"| {ep} | {VARIANT_TITLES.get(v, v)} | {d.get('Questions', 0) / n:.2f} | "
              f"{d.get('Com_select', 0) / n:.2f} | {d.get('Com_insert', 0) / n:.2f} | "
              f"{d.get('Com_update', 0) / n:.2f} | {fmt_int(d.get('rows_examined', 0) / n)} | "
              f"{f'{seq:.2f}' if seq is not None else '–'} |")
    w("")
    w("(`Questions` counts every statement, BEGIN/COMMIT and the named-lock calls included; the "
      "`SELECT`/`INSERT`/`UPDATE` columns count statements by kind, prepared or not. The background "
      "message watcher (≈10 scans/s while clients poll) is included, spread over the requests.)")
    w("")

    w("### Time of each statement (DB ceiling, 1 connection: pure latency)")
    w("")
    w("Mean and p99 in µs of each statement of the endpoint's `full` sequence, measured by "
      "`dbceiling` at 1 connection, per index variant. This is the database's share of one "
      "request's latency; the rest of shopchat's p50 at 1 connection is HTTP, auth, JSON and the "
      "pool.")
    w("")
    seen = set()
    head = ["endpoint", "statement"]
    for v in variants:
        head += [f"{VARIANT_TITLES.get(v, v)}: mean µs", "p99 µs"]
    w("| " + " | ".join(head) + " |")
    w("|" + "---|" * len(head))
    for ep in endpoints:
        names = []
        for v in variants:
            cr = C.get((v, f"{ep}-full", 1))
            for s in (cr or {}).get("statements", []):
                if s["name"] not in names:
                    names.append(s["name"])
        for name in names:
            cells = [ep if (ep not in seen) else "", f"`{name}`"]
            seen.add(ep)
            for v in variants:
                cr = C.get((v, f"{ep}-full", 1))
                s = next((s for s in (cr or {}).get("statements", []) if s["name"] == name), None)
                cells += [fmt_int(s["mean_us"]) if s else "–", fmt_int(s["p99_us"]) if s else "–"]
            w("| " + " | ".join(cells) + " |")
    w("")
    w("shopchat at 1 connection, for comparison (p50 ms of the whole HTTP request):")
    w("")
    w("| endpoint | " + " | ".join(f"{VARIANT_TITLES.get(v, v)}: shopchat p50 ms | DB full p50 ms" for v in variants) + " |")
    w("|---|" + "---|---|" * len(variants))
    for ep in endpoints:
        cells = [ep]
        for v in variants:
            r = S.get((v, ep, 1))
            cr = C.get((v, f"{ep}-full", 1))
            cells += [fmt_ms(r["latency_ms"]["p50"]) if r else "–",
                      fmt_ms(cr["latency_us"]["p50"] / 1000) if cr else "–"]
        w("| " + " | ".join(cells) + " |")
    w("")

    if indexes:
        w("### Effect of each recommended index")
        w("")
        w("Build time of each statement of `schema/recommended-indexes.sql` on this data set, and "
          "the statements it speeds up (mean µs at 1 connection, primary keys only → recommended).")
        w("")
        affects = {
            "shopchat_messages_conversation_id_id": ["message_page", "count_messages_after", "message_page_after"],
            "shopchat_conversations_sender_id_id": ["conversation_page", "candidates"],
            "shopchat_shops_user_id": ["conversation_page", "shops_in"],
            "shopchat_translations_lang": [],
            "shopchat_business_settings_type": [],
        }
        stmt_means = defaultdict(dict)
        for (v, scen, c), cr in C.items():
            if c != 1:
                continue
            for s in cr["statements"]:
                stmt_means[(s["name"], scen)][v] = s["mean_us"]
        w("| index | build s | statements (scenario): pk → recommended mean µs |")
        w("|---|---|---|")
        for ix in indexes:
            name = next((n for n in affects if n in ix["statement"]), ix["statement"][:60])
            effects = []
            for stmt in affects.get(name, []):
                for (sname, scen), vals in sorted(stmt_means.items()):
                    if sname == stmt and "pk" in vals and "recommended" in vals:
                        effects.append(f"`{sname}` ({scen.replace('-full', '').replace('-hot', ' hot')}): "
                                       f"{fmt_int(vals['pk'])} → {fmt_int(vals['recommended'])}")
            if not effects:
                effects = ["not on the measured paths (its table is read once per cache period)"]
            w(f"| `{name}` | {ix['seconds']:.1f} | {'; '.join(effects)} |")
        w("")

    if perfs:
        w("### Profile (perf, sampled at 499 Hz during an extra run at 64 connections)")
        w("")
        w("Self time by shared object and symbol, lines above 0.7 %. `[k]` = kernel (mostly the TCP "
          "loopback, epoll and futex wake-ups), `[.]` = user space.")
        w("")
        w("| endpoint | process | CPU by shared object (self time) |")
        w("|---|---|---|")
        for p in perfs:
            for proc in ("shopchat", "mariadbd"):
                parts = []
                for ln in p.get(proc + "_dso") or []:
                    f = ln.split()
                    if len(f) >= 2 and f[0].endswith("%"):
                        parts.append(f"{f[1]} {f[0]}")
                if parts:
                    who = " (one client)" if p.get("clients") == "hot" else ""
                    w(f"| {p['endpoint']}{who} | {proc} | {', '.join(parts[:6])} |")
        w("")
        w("`[kernel.kallsyms]` inside shopchat is mostly `finish_task_switch` / `_raw_spin_unlock_irqrestore`: "
          "threads being put to sleep and woken (futex, epoll) for every database round trip and answer.")
        w("")
        for p in perfs:
            for proc in ("shopchat", "mariadbd"):
                lines = p.get(proc) or []
                if not lines:
                    continue
                who = ", one client" if p.get("clients") == "hot" else ""
                w(f"<details><summary>{proc} during {p['endpoint']} ({VARIANT_TITLES.get(p['variant'], p['variant'])}{who})</summary>")
                w("")
                w("```")
                for ln in lines[:30]:
                    w(ln.rstrip()[:160])
                w("```")
                w("")
                w("</details>")
                w("")

    # ------------------------------------------------------------ long-poll
    lps = [r for r in rows if r["kind"] == "longpoll"]
    if lps:
        w("## Long-poll (`get-new-messages/{cid}/{last}?wait=30`)")
        w("")
        w("`bench/tools/src/bin/longpoll.rs`: first the statements/s MariaDB runs while shopchat is idle "
          "(its message watcher active), then N connections each hold a \"nothing new\" poll with "
          "`wait=30` and the rate is measured again, with shopchat's RSS; then 100 inserts, one at a "
          "time, each into the conversation of a held waiter — alternately through shopchat's "
          "`insert-message` and straight into the database (like the Laravel web app) — and the time "
          "from the insert to the waiter's answer (which must carry the new message).")
        w("")
        for r in lps:
            if r.get("failed"):
                w(f"- {VARIANT_TITLES.get(r['variant'], r['variant'])}: **the test failed**: `{r['failed'][:300]}`")
                continue
            a, b = r["wake_via_shopchat"], r["wake_via_database"]
            w("| measure | value |")
            w("|---|---|")
            w(f"| index variant | {VARIANT_TITLES.get(r['variant'], r['variant'])} |")
            w(f"| waiters held | {fmt_int(r['waiters'])} (opened in {r['open_seconds']:.1f} s; connect errors {r['connect_errors']}) |")
            w(f"| answered early (before any insert; should be 0) | {r['early_answers']}"
              f"{' — first: `' + r['early_sample'][:160] + '`' if r['early_answers'] else ''} |")
            w(f"| shopchat RSS: idle → {fmt_int(r['waiters'])} held (peak during the test) | "
              f"{mb(r['rss_idle_kb'])} MB → {mb(r['rss_held_kb'])} MB ({mb(r['peak_rss_kb'])} MB) |")
            w(f"| memory per held request | {(r['rss_held_kb'] - r['rss_idle_kb']) * 1024 / max(r['waiters'], 1):,.0f} bytes |")
            w(f"| MariaDB statements/s: idle, 0 waiters → {fmt_int(r['waiters'])} held ({r['hold_s']} s windows) | "
              f"{r['idle_statements_per_s']:.1f} → {r['held_statements_per_s']:.1f} |")
            w(f"| insert → answer, through shopchat (n={a['count']}) | p50 {fmt_ms(a['p50_ms'])} ms, p99 {fmt_ms(a['p99_ms'])} ms, max {fmt_ms(a['max_ms'])} ms |")
            w(f"| insert → answer, straight into the database (n={b['count']}) | p50 {fmt_ms(b['p50_ms'])} ms, p99 {fmt_ms(b['p99_ms'])} ms, max {fmt_ms(b['max_ms'])} ms |")
            w(f"| time until shopchat had taken every waiter in (authenticated, checked, waiting) | {r.get('settle_seconds', 0):.1f} s |")
            if r.get("messages_since_last_poll_phase") is not None:
                w(f"| messages written since the poll runs (the watcher idles 60 s after the last poll, then catches up) | {fmt_int(r['messages_since_last_poll_phase'])} |")
            w(f"| wake-ups missing or wrong (of 100) | {r['wake_errors']}"
              f" (no answer within 5 s: {r.get('wake_timeouts', '?')}; answer without the new message: {r.get('wake_wrong_answer', '?')}; connection failed: {r.get('wake_connection_failed', '?')})"
              f"{' — first: `' + r['first_wake_error'][:160] + '`' if r['wake_errors'] else ''} |")
            if r.get("log_problems"):
                w(f"| WARN/ERROR log lines | {r['log_problems']}: `{(r.get('first_log_problem') or '')[:160]}` |")
            w("")

    # ------------------------------------------------------------ checks
    w("## Answer checks")
    w("")
    w("Before the runs of each endpoint the driver sends the first client's request once and checks "
      "the answer (HTTP 200, JSON with the expected shape; the poll must be an empty page):")
    w("")
    for v in variants:
        cs = [c for c in checks if c["variant"] == v]
        ok = [c["endpoint"] for c in cs if c["ok"]]
        bad = [c for c in cs if not c["ok"]]
        w(f"- {VARIANT_TITLES.get(v, v)}: ok: {', '.join(ok) or 'none'}"
          + ("; **failed**: " + "; ".join(f"{c['endpoint']}: {c['problem']}" for c in bad) if bad else ""))
    w("")
    w("Raw measurements: `bench/.work/results.jsonl` (not in git); regenerate this file from them with "
      "`python3 bench/report.py bench/.work/results.jsonl bench/RESULTS.md`.")
    w("")
    with open(dst, "w") as f:
        f.write("\n".join(out))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
