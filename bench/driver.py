#!/usr/bin/env python3
"""The measuring part of bench/run.sh (which prepares the database, the data and the builds first).

For each index variant: reset the data set to its generated rows, set the indexes, start shopchat
(release build), then per endpoint: a warm-up, then for each connection count a wrk run against
shopchat and dbceiling runs against the database (same statements, same concurrency). Around every
run it samples shopchat's RSS, the CPU time of shopchat, mariadbd and the load generator, and the
server's status counters. Each measurement is one JSON line in $BENCH_DIR/results.jsonl;
bench/report.py turns them into RESULTS.md. Standard library only.
"""

import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

ENV = os.environ
ROOT = ENV["BENCH_ROOT"]
WORK = ENV["BENCH_DIR"]
DB_PORT = ENV["BENCH_DB_PORT"]
DB_NAME = ENV["BENCH_DB_NAME"]
CLIENTS = ENV["BENCH_CLIENTS_DIR"]
SHOPCHAT = ENV["BENCH_SHOPCHAT_BIN"]
DBCEILING = ENV["BENCH_DBCEILING_BIN"]
LONGPOLL = ENV["BENCH_LONGPOLL_BIN"]
# How long shopchat is left without requests before its idle RSS is read again after the load:
# it drops expired cache entries after 2 quiet seconds and every cache that only saves
# statements after 60 (src/ops/memory.rs).
IDLE_SECONDS = 62
LONGPOLL_WAITERS = int(ENV.get("BENCH_LONGPOLL_WAITERS", "10000"))
LONGPOLL_HOLD = int(ENV.get("BENCH_LONGPOLL_HOLD", "10"))
SYSTEM_KEY = ENV["BENCH_SYSTEM_KEY"]
CONNECTIONS = [int(c) for c in ENV["BENCH_CONNECTIONS"].split()]
DURATION = float(ENV["BENCH_DURATION"])
DB_DURATION = float(ENV["BENCH_DB_DURATION"])
WARMUP = float(ENV["BENCH_WARMUP"])
VARIANTS = ENV["BENCH_VARIANTS"].split()
ENDPOINTS = ENV["BENCH_ENDPOINTS"].split()
RESULTS_MD = os.path.join(ROOT, ENV["BENCH_RESULTS"])
PERF = ENV.get("BENCH_PERF", "1") == "1" and shutil.which("perf") is not None
RESULTS = os.path.join(WORK, "results.jsonl")
LUA = os.path.join(ROOT, "bench", "wrk", "chat.lua")
CLK_TCK = os.sysconf("SC_CLK_TCK")
# The fixture's APP_KEY (any valid key works; it only encrypts the e-mail links).
APP_KEY = "base64:FxO+5zEy133M5/q/XUBpdtp/0srOK9tezZfkWCnyPFc="

# endpoint -> (client list, dbceiling scenarios)
ENDPOINT_SETUP = {
    "get-new-messages": ("pollers", ["get-new-messages-full", "get-new-messages-hot"]),
    "messages": ("pollers", ["messages-full", "messages-hot"]),
    "conversations": ("listers", ["conversations-full", "conversations-hot"]),
    "insert-message": ("writers", ["insert-message-full"]),
    "create-conversation": ("creators", ["create-conversation-full"]),
}
STATUS_VARS = [
    "Questions", "Com_select", "Com_insert", "Com_update", "Com_delete", "Com_stmt_execute",
    "Com_stmt_prepare",
    "Handler_read_first", "Handler_read_key", "Handler_read_last", "Handler_read_next",
    "Handler_read_prev", "Handler_read_rnd", "Handler_read_rnd_next",
    "Innodb_buffer_pool_reads", "Innodb_buffer_pool_read_requests", "Connections",
    "Innodb_data_fsyncs", "Created_tmp_tables",
]


def log(msg):
    elapsed = int(time.time() - int(ENV.get("BENCH_STARTED_AT", time.time())))
    print(f"==> [{elapsed // 60:02d}:{elapsed % 60:02d}] {msg}", file=sys.stderr, flush=True)


def record(obj):
    with open(RESULTS, "a") as f:
        f.write(json.dumps(obj) + "\n")


# ------------------------------------------------------------------ database
CLIENT_BIN = shutil.which("mariadb") or shutil.which("mysql")


def sql(statement, db=DB_NAME, check=True):
    cmd = [CLIENT_BIN, "--no-defaults", "-uroot", "-h127.0.0.1", f"-P{DB_PORT}",
           "--default-character-set=utf8mb4", "--batch", "--skip-column-names", "-e", statement]
    if db:
        cmd.append(db)
    out = subprocess.run(cmd, capture_output=True, text=True)
    if check and out.returncode != 0:
        raise RuntimeError(f"SQL failed: {statement[:200]}: {out.stderr.strip()}")
    return out.stdout


def status():
    names = ",".join(f"'{n}'" for n in STATUS_VARS)
    out = sql(f"SHOW GLOBAL STATUS WHERE Variable_name IN ({names})", db=None)
    values = {}
    for line in out.splitlines():
        k, _, v = line.partition("\t")
        try:
            values[k] = int(v)
        except ValueError:
            pass
    return values


def wait_quiet(max_seconds=180):
    """Waits until the server runs no statement (leftovers of a run whose client went away)."""
    deadline = time.time() + max_seconds
    quiet = 0
    while time.time() < deadline:
        n = int(sql("SELECT COUNT(*) FROM information_schema.processlist "
                    "WHERE command = 'Query' AND id <> CONNECTION_ID()", db=None).strip() or 0)
        quiet = quiet + 1 if n == 0 else 0
        if quiet >= 3:
            return True
        time.sleep(0.2)
    log("warning: the database still runs statements; going on")
    return False


def mariadbd_pid():
    with open(os.path.join(WORK, "db", "mysqld.pid")) as f:
        return int(f.read().strip())


# ------------------------------------------------------------------ process sampling
def proc_cpu(pid):
    """User + system CPU seconds of a process (all its threads)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return 0.0


def machine_cpu():
    """(busy, total) CPU seconds of the whole machine."""
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
    total = sum(parts[:8])
    return (total - idle) / CLK_TCK, total / CLK_TCK


def rss_kb(pid, field="VmRSS"):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class RssSampler:
    """Peak VmRSS of a process, sampled every 50 ms while a run lasts."""

    def __init__(self, pid):
        self.pid, self.peak, self._stop = pid, 0, threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_kb(self.pid))
            self._stop.wait(0.05)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, rss_kb(self.pid))


class Counters:
    """CPU of shopchat, mariadbd, our load generator (children) and the machine; DB counters."""

    def __init__(self, shopchat_pid):
        self.shopchat_pid, self.db_pid = shopchat_pid, mariadbd_pid()

    def snap(self):
        ch = resource.getrusage(resource.RUSAGE_CHILDREN)
        busy, total = machine_cpu()
        return {
            "t": time.time(), "shopchat": proc_cpu(self.shopchat_pid) if self.shopchat_pid else 0.0,
            "mariadbd": proc_cpu(self.db_pid), "children": ch.ru_utime + ch.ru_stime,
            "busy": busy, "total": total,
        }

    @staticmethod
    def delta(a, b, st_a, st_b):
        wall = b["t"] - a["t"]
        cpu = {k: round(b[k] - a[k], 3) for k in ("shopchat", "mariadbd", "children", "busy", "total")}
        cpu["wall"] = round(wall, 3)
        # What the machine did besides shopchat, mariadbd and the load generator (other engineers).
        cpu["other"] = round(cpu["busy"] - cpu["shopchat"] - cpu["mariadbd"] - cpu["children"], 3)
        db = {k: st_b.get(k, 0) - st_a.get(k, 0) for k in STATUS_VARS}
        # Rows the storage engine handed to the server: index lookups, range and full scans
        # (MariaDB 10.11 leaves Innodb_rows_read at 0).
        db["rows_examined"] = sum(v for k, v in db.items() if k.startswith("Handler_read_"))
        return cpu, db


# ------------------------------------------------------------------ shopchat
class Shopchat:
    def __init__(self, variant):
        self.variant = variant
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = os.path.join(WORK, f"shopchat-{variant}.log")
        self.outbox = os.path.join(WORK, "outbox")
        shutil.rmtree(self.outbox, ignore_errors=True)
        env = dict(ENV)
        env.update({
            "DB_CONNECTION": "mysql", "DB_HOST": "127.0.0.1", "DB_PORT": DB_PORT,
            "DB_DATABASE": DB_NAME, "DB_USERNAME": "root", "DB_PASSWORD": "",
            "APP_KEY": APP_KEY, "APP_URL": self.base, "APP_TIMEZONE": "UTC",
            "SYSTEM_KEY": SYSTEM_KEY, "DEFAULT_LANGUAGE": "en", "MAIL_MAILER": "log",
            "SHOPCHAT_OUTBOX_DIR": self.outbox, "SHOPCHAT_LISTEN": f"127.0.0.1:{self.port}",
            # The throttle (600/min per user by default, D8) would answer 429 to a load generator
            # that replays a few thousand users this fast; 0 turns it off.
            "SHOPCHAT_RATE_LIMIT": "0",
            # Plain log lines in the file (no colour escapes).
            "NO_COLOR": "1",
        })
        env.pop("CARGO_TARGET_DIR", None)
        self.settings = {k: v for k, v in env.items()
                         if k.startswith("SHOPCHAT_") or k in ("RUST_LOG", "APP_TIMEZONE", "MAIL_MAILER")}
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([SHOPCHAT, "serve"], env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=WORK)
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"shopchat exited with {self.proc.returncode}; see {self.log_path}")
            try:
                with urllib.request.urlopen(self.base + "/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"shopchat did not answer /health; see {self.log_path}")

    @property
    def pid(self):
        return self.proc.pid

    def log_problems(self):
        """WARN/ERROR lines logged since the last call; then empties the log (disk stays small)."""
        self.log.flush()
        pattern = r"\b(WARN|ERROR)\b"
        count = subprocess.run(["grep", "-E", "-c", pattern, self.log_path],
                               capture_output=True, text=True).stdout.strip()
        first = subprocess.run(["grep", "-E", "-m", "1", pattern, self.log_path],
                               capture_output=True, text=True, errors="replace").stdout.strip()
        os.truncate(self.log_path, 0)
        return int(count or 0), re.sub(r"\x1b\[[0-9;]*m", "", first)[:300] or None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def first_client(set_name):
    with open(os.path.join(CLIENTS, set_name + ".tsv")) as f:
        t, u, c, last, p = f.readline().split("\t")[:5]
    return {"token": t, "user": u, "conv": c, "last": last, "product": p.strip()}


def check_endpoint(app, endpoint):
    """One request as wrk will send it; the answer must be a 200 with the expected shape."""
    set_name = ENDPOINT_SETUP[endpoint][0]
    c = first_client(set_name)
    headers = {"Accept": "application/json", "System-Key": SYSTEM_KEY,
               "Authorization": f"Bearer {c['token']}|bench-{c['token']}"}
    api = app.base + "/api/v2/chat"
    data = None
    if endpoint == "conversations":
        url = api + "/conversations"
    elif endpoint == "messages":
        url = f"{api}/messages/{c['conv']}"
    elif endpoint == "get-new-messages":
        url = f"{api}/get-new-messages/{c['conv']}/{c['last']}"
    elif endpoint == "insert-message":
        url = api + "/insert-message"
        data = f"conversation_id={c['conv']}&message=Bench+check".encode()
    else:
        url = api + "/create-conversation"
        data = f"product_id={c['product']}&title=Bench+check&message=Bench+check".encode()
    if data is not None:
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    req = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            status, body = r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        status, body = e.code, e.read().decode("utf-8", "replace")
    problem = None
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    if status != 200 or not isinstance(doc, dict):
        problem = f"HTTP {status}: {body[:200]}"
    elif endpoint == "create-conversation":
        if doc.get("result") is not True:
            problem = body[:200]
    elif "data" not in doc or "meta" not in doc:
        problem = body[:200]
    elif endpoint == "get-new-messages" and doc["data"]:
        problem = "the poll is not 'nothing new': " + body[:200]
    elif endpoint != "get-new-messages" and not doc["data"]:
        problem = "empty page: " + body[:200]
    return {"endpoint": endpoint, "status": status, "ok": problem is None, "problem": problem,
            "bytes": len(body.encode())}


# ------------------------------------------------------------------ load generators
def run_wrk(app, endpoint, connections, duration, set_name=None):
    set_name = set_name or ENDPOINT_SETUP[endpoint][0]
    threads = max(1, min(2, connections))
    cmd = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration:g}s",
           "--timeout", "30s", "-s", LUA, app.base, "--", endpoint,
           os.path.join(CLIENTS, set_name + ".tsv"), SYSTEM_KEY]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 120)
    for line in out.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            return json.loads(line[len("BENCH_JSON "):])
    raise RuntimeError(f"wrk gave no result: {out.stdout[-500:]} {out.stderr[-500:]}")


def run_ceiling(scenario, set_name, connections, duration):
    cmd = [DBCEILING, "--url", f"mysql://root@127.0.0.1:{DB_PORT}/{DB_NAME}",
           "--scenario", scenario, "--clients", os.path.join(CLIENTS, set_name + ".tsv"),
           "--concurrency", str(connections), "--duration", f"{duration:g}"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 180)
    for line in out.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            return json.loads(line[len("BENCH_JSON "):])
    raise RuntimeError(f"dbceiling gave no result: {out.stdout[-500:]} {out.stderr[-500:]}")


def measured(app, fn):
    """Runs fn() with RSS sampling, CPU and DB counters around it."""
    counters = Counters(app.pid if app else None)
    st_a = status()
    a = counters.snap()
    if app:
        with RssSampler(app.pid) as rss:
            result = fn()
        peak = rss.peak
    else:
        result, peak = fn(), None
    b = counters.snap()
    st_b = status()
    cpu, db = Counters.delta(a, b, st_a, st_b)
    return result, peak, cpu, db


def shopchat_run(app, variant, endpoint, connections):
    wait_quiet()
    log(f"{variant}: shopchat {endpoint} c={connections} ({DURATION:g} s)")
    res, peak, cpu, db = measured(app, lambda: run_wrk(app, endpoint, connections, DURATION))
    problems, first = app.log_problems()
    e = res["errors"]
    seconds = res["duration_us"] / 1e6
    rec = {
        "kind": "shopchat", "variant": variant, "endpoint": endpoint, "connections": connections,
        "requests": res["requests"], "seconds": round(seconds, 3),
        "rps": round(res["requests"] / seconds, 1) if seconds else 0,
        "latency_ms": {k: round(v / 1000, 3) for k, v in res["latency_us"].items()},
        "errors": e, "errors_total": sum(e.values()),
        "peak_rss_kb": peak, "hwm_kb": rss_kb(app.pid, "VmHWM"),
        "cpu": cpu, "db": db, "log_problems": problems, "first_log_problem": first,
    }
    record(rec)
    log(f"    {rec['rps']} req/s, p50 {rec['latency_ms']['p50']} ms, p99 {rec['latency_ms']['p99']} ms, "
        f"errors {rec['errors_total']}, peak RSS {peak // 1024 if peak else '?'} MB")
    return rec


def ceiling_run(app, variant, endpoint, scenario, connections):
    wait_quiet()
    set_name = ENDPOINT_SETUP[endpoint][0]
    log(f"{variant}: db ceiling {scenario} c={connections} ({DB_DURATION:g} s)")
    res, _, cpu, db = measured(app, lambda: run_ceiling(scenario, set_name, connections, DB_DURATION))
    rec = {"kind": "ceiling", "variant": variant, "endpoint": endpoint, "scenario": scenario,
           "connections": connections, "cpu": cpu, "db": db}
    rec.update({k: res[k] for k in ("requests", "duration_s", "rps", "errors", "first_error",
                                    "latency_us", "statements")})
    record(rec)
    log(f"    {res['rps']} req/s, p99 {res['latency_us']['p99'] / 1000:.2f} ms, errors {res['errors']}")


# The one-client runs: the PHP comparison's wrk command (one token, one conversation of ~5,933
# messages, 2 threads, 64 connections, 12 s; bench/sql/clients.sql, set "hot").
ANCHOR_ENDPOINTS = ["get-new-messages", "messages", "conversations"]
ANCHOR_SECONDS = float(ENV.get("BENCH_ANCHOR_SECONDS", "12"))


def anchor_run(app, variant, endpoint):
    wait_quiet()
    log(f"{variant}: one client, {endpoint} c=64 ({ANCHOR_SECONDS:g} s)")
    run_wrk(app, endpoint, 64, min(WARMUP, 3), set_name="hot")
    res, peak, cpu, db = measured(app, lambda: run_wrk(app, endpoint, 64, ANCHOR_SECONDS, set_name="hot"))
    problems, first = app.log_problems()
    seconds = res["duration_us"] / 1e6
    rec = {
        "kind": "anchor", "variant": variant, "endpoint": endpoint, "connections": 64,
        "requests": res["requests"], "seconds": round(seconds, 3),
        "rps": round(res["requests"] / seconds, 1) if seconds else 0,
        "latency_ms": {k: round(v / 1000, 3) for k, v in res["latency_us"].items()},
        "errors": res["errors"], "errors_total": sum(res["errors"].values()),
        "peak_rss_kb": peak, "cpu": cpu, "db": db, "log_problems": problems,
        "first_log_problem": first,
    }
    record(rec)
    log(f"    {rec['rps']} req/s, p99 {rec['latency_ms']['p99']} ms, "
        f"shopchat {cpu['shopchat'] * 1e6 / max(rec['requests'], 1):.1f} µs/request")


def profile(app, variant, endpoint, connections, set_name=None):
    """perf: where shopchat and mariadbd spend their CPU during one extra run (not in the tables)."""
    seconds = min(DURATION, 6)
    tag = endpoint + ("-" + set_name if set_name else "")
    log(f"{variant}: perf profile of {tag} c={connections} ({seconds:g} s)")
    wait_quiet()
    files = {"shopchat": (app.pid, os.path.join(WORK, f"perf-shopchat-{tag}.data")),
             "mariadbd": (mariadbd_pid(), os.path.join(WORK, f"perf-mariadbd-{tag}.data"))}
    recorders = []
    for name, (pid, path) in files.items():
        recorders.append(subprocess.Popen(
            ["perf", "record", "-F", "499", "-p", str(pid), "-o", path, "--", "sleep", f"{seconds:g}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    time.sleep(0.3)
    try:
        run_wrk(app, endpoint, connections, seconds, set_name=set_name)
    finally:
        for r in recorders:
            r.wait(timeout=60)
    app.log_problems()
    out = {"kind": "perf", "variant": variant, "endpoint": endpoint, "connections": connections,
           "clients": set_name or ENDPOINT_SETUP[endpoint][0]}
    for name, (_, path) in files.items():
        rep = subprocess.run(["perf", "report", "-i", path, "--stdio", "--no-children",
                              "--sort", "dso,sym", "--percent-limit", "0.7"],
                             capture_output=True, text=True, timeout=300)
        lines = [ln for ln in rep.stdout.splitlines() if ln.strip() and not ln.startswith("#")]
        out[name] = lines[:40]
        by_dso = subprocess.run(["perf", "report", "-i", path, "--stdio", "--no-children",
                                 "--sort", "dso", "--percent-limit", "1"],
                                capture_output=True, text=True, timeout=300)
        out[name + "_dso"] = [ln for ln in by_dso.stdout.splitlines()
                              if ln.strip() and not ln.startswith("#")][:12]
        try:
            os.remove(path)
        except OSError:
            pass
    record(out)


LAST_POLL_MAX_ID = [None]


def max_message_id():
    return int(sql("SELECT COALESCE(MAX(id), 0) FROM messages").strip() or 0)


def longpoll(app, variant):
    """Issue 8 item 3: N held long-polls (RSS, statement rate), then insert-to-answer latency.
    Writes into read-only conversations, so it runs last (the next variant resets the data)."""
    if LONGPOLL_WAITERS <= 0:
        return
    wait_quiet()
    backlog = None
    if LAST_POLL_MAX_ID[0] is not None:
        backlog = int(sql(f"SELECT COUNT(*) FROM messages WHERE id > {LAST_POLL_MAX_ID[0]}").strip() or 0)
    log(f"{variant}: long-poll, {LONGPOLL_WAITERS} waiters held for {LONGPOLL_HOLD} s, then 100 wake-ups")
    cmd = [LONGPOLL, "--base", app.base, "--db-url", f"mysql://root@127.0.0.1:{DB_PORT}/{DB_NAME}",
           "--clients", os.path.join(CLIENTS, "pollers.tsv"), "--pid", str(app.pid),
           "--waiters", str(LONGPOLL_WAITERS), "--wait", "30", "--inserts", "100",
           "--hold", str(LONGPOLL_HOLD), "--system-key", SYSTEM_KEY]
    with RssSampler(app.pid) as rss:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=LONGPOLL_HOLD * 2 + 300,
                             env=dict(ENV, LONGPOLL_DEBUG="1"))
    with open(os.path.join(WORK, "longpoll.stderr"), "w") as f:
        f.write(out.stderr)
    problems, first = app.log_problems()
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if line is None:
        log(f"warning: longpoll gave no result: {out.stderr[-500:]}")
        record({"kind": "longpoll", "variant": variant, "failed": out.stderr[-500:]})
        return
    rec = json.loads(line[len("BENCH_JSON "):])
    rec.update({"kind": "longpoll", "variant": variant, "peak_rss_kb": rss.peak,
                "messages_since_last_poll_phase": backlog,
                "log_problems": problems, "first_log_problem": first})
    record(rec)
    log(f"    held RSS {rec['rss_held_kb'] // 1024} MB, statements/s idle {rec['idle_statements_per_s']} "
        f"held {rec['held_statements_per_s']}, early answers {rec['early_answers']}, "
        f"wake p50 {rec['wake_via_shopchat']['p50_ms']} / {rec['wake_via_database']['p50_ms']} ms")


# ------------------------------------------------------------------ variants
def reset_data():
    """Removes what earlier writes added, so each variant starts from the generated rows."""
    msgs, convs = int(ENV["BENCH_MESSAGES"]), int(ENV["BENCH_CONVERSATIONS"])
    sql(f"DELETE FROM messages WHERE id > {msgs}; DELETE FROM conversations WHERE id > {convs}; "
        "DELETE FROM translations WHERE id > 7")


def existing_indexes():
    out = sql("SELECT DISTINCT table_name, index_name FROM information_schema.statistics "
              f"WHERE table_schema = '{DB_NAME}' AND index_name LIKE 'shopchat\\_%'")
    return [line.split("\t") for line in out.splitlines() if line.strip()]


def set_indexes(variant):
    if variant not in ("pk", "recommended"):
        raise RuntimeError(f"unknown variant {variant}")
    path = os.path.join(ROOT, "schema", "recommended-indexes.sql")
    with open(path) as f:
        statements = [s.strip() for s in re.sub(r"--[^\n]*", "", f.read()).split(";") if s.strip()]
    wanted = sorted(re.search(r"ADD INDEX (\w+)", st).group(1) for st in statements)
    present = existing_indexes()
    if variant == "recommended" and sorted(ix for _, ix in present) == wanted:
        # Left by an earlier run (BENCH_VARIANTS=recommended): building them again takes minutes.
        log("the recommended indexes are already there (build times not measured again)")
        return
    for table, index in present:
        sql(f"ALTER TABLE `{table}` DROP INDEX `{index}`")
    if variant == "pk":
        return
    for stmt in statements:
        started = time.time()
        sql(stmt)
        record({"kind": "index", "variant": variant, "statement": stmt,
                "seconds": round(time.time() - started, 2)})
    sql("ANALYZE TABLE messages, conversations, shops, translations, business_settings")


def environment():
    def cmd(args):
        try:
            return subprocess.run(args, capture_output=True, text=True, cwd=ROOT).stdout.strip()
        except OSError:
            return ""
    cpu_model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu_model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    with open("/proc/meminfo") as f:
        mem_kb = int(f.readline().split()[1])
    stats = sql("SELECT (SELECT COUNT(*) FROM users), (SELECT COUNT(*) FROM personal_access_tokens), "
                "(SELECT COUNT(*) FROM conversations), (SELECT COUNT(*) FROM messages), "
                "(SELECT COUNT(*) FROM shops), (SELECT COUNT(*) FROM products)").split()
    lengths = sql("SELECT n FROM (SELECT conversation_id, COUNT(*) n FROM messages "
                  "GROUP BY conversation_id) x ORDER BY n").split()
    lengths = [int(x) for x in lengths]
    def pct(p):
        return lengths[min(len(lengths) - 1, int(p / 100 * len(lengths)))] if lengths else 0
    record({
        "kind": "env", "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "commit": cmd(["git", "rev-parse", "--short", "HEAD"]),
        "branch": cmd(["git", "rev-parse", "--abbrev-ref", "HEAD"]),
        "dirty": bool(cmd(["git", "status", "--porcelain", "--untracked-files=no"])),
        "rustc": cmd(["rustc", "--version"]), "wrk": cmd(["wrk", "--version"]).splitlines()[0] if cmd(["wrk", "--version"]) else "",
        "mariadb": sql("SELECT VERSION()", db=None).strip(),
        "buffer_pool_mb": int(sql("SELECT @@innodb_buffer_pool_size", db=None)) // 1048576,
        "cpu": cpu_model, "cores": os.cpu_count(), "mem_gb": round(mem_kb / 1048576, 1),
        "kernel": platform.release(), "loadavg_start": os.getloadavg(),
        "rows": dict(zip(["users", "tokens", "conversations", "messages", "shops", "products"],
                         [int(x) for x in stats])),
        "conversation_length": {"max": lengths[-1] if lengths else 0, "p50": pct(50), "p90": pct(90),
                                "p99": pct(99), "top10": lengths[-10:][::-1]},
        "generate_seconds": int(open(os.path.join(WORK, "generate-seconds")).read().strip() or 0),
        "sample": int(ENV["BENCH_SAMPLE"]), "connections": CONNECTIONS, "duration": DURATION,
        "db_duration": DB_DURATION, "warmup": WARMUP, "variants": VARIANTS, "endpoints": ENDPOINTS,
        "perf": PERF,
    })


def run_variant(variant):
    log(f"variant {variant}: resetting the data and the indexes")
    reset_data()
    set_indexes(variant)
    app = Shopchat(variant)
    try:
        time.sleep(1.0)
        record({"kind": "idle", "variant": variant, "when": "start", "rss_kb": rss_kb(app.pid),
                "settings": app.settings})
        for endpoint in ENDPOINTS:
            check = check_endpoint(app, endpoint)
            check.update({"kind": "check", "variant": variant})
            record(check)
            if not check["ok"]:
                log(f"warning: {endpoint} check failed: {check['problem']}")
            app.log_problems()
            wait_quiet()
            log(f"{variant}: warm-up {endpoint} ({WARMUP:g} s, 16 connections)")
            run_wrk(app, endpoint, 16, WARMUP)
            app.log_problems()
            for c in CONNECTIONS:
                shopchat_run(app, variant, endpoint, c)
                if endpoint == "get-new-messages":
                    # The watcher follows messages only while polls come in (it idles 60 s after
                    # the last one); the long-poll test reports what was written since.
                    LAST_POLL_MAX_ID[0] = max_message_id()
                for scenario in ENDPOINT_SETUP[endpoint][1]:
                    ceiling_run(app, variant, endpoint, scenario, c)
            if PERF and variant == VARIANTS[-1] and endpoint in ("get-new-messages", "messages", "conversations"):
                profile(app, variant, endpoint, 64)
        if variant == VARIANTS[-1]:
            for endpoint in ANCHOR_ENDPOINTS:
                anchor_run(app, variant, endpoint)
            if PERF:
                profile(app, variant, "get-new-messages", 64, set_name="hot")
        wait_quiet()
        trail = []
        for second in range(1, IDLE_SECONDS + 1):
            time.sleep(1.0)
            if second in (1, 2, 3, 5, 10, 30, 59, 61, IDLE_SECONDS):
                trail.append([second, rss_kb(app.pid)])
        record({"kind": "idle", "variant": variant, "when": "after load", "rss_kb": rss_kb(app.pid),
                "hwm_kb": rss_kb(app.pid, "VmHWM"), "idle_seconds": IDLE_SECONDS,
                "anon_kb": rss_kb(app.pid, "RssAnon"), "file_kb": rss_kb(app.pid, "RssFile"),
                "trail": trail})
        if variant == VARIANTS[-1]:
            longpoll(app, variant)
    finally:
        app.stop()


def main():
    if os.path.exists(RESULTS):
        os.replace(RESULTS, RESULTS + ".previous")
    reset_data()
    environment()
    for variant in VARIANTS:
        run_variant(variant)
    record({"kind": "end", "total_seconds": int(time.time() - int(ENV.get("BENCH_STARTED_AT", time.time()))),
            "loadavg_end": os.getloadavg()})
    subprocess.run([sys.executable, os.path.join(ROOT, "bench", "report.py"), RESULTS, RESULTS_MD],
                   check=True)


if __name__ == "__main__":
    main()
