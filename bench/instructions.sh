#!/usr/bin/env bash
# bench/instructions.sh — shopchat's own CPU per request as instructions, counted by valgrind's
# callgrind: the same figure (within ~1 %) on any machine for the same binary and requests, where the µs of
# bench/run.sh and bench/apptraffic.sh change with the machine (bench/README.md, "CPU per request").
#
# A private MariaDB (bench/.work/instructions-db) with the fixture data set, shopchat's release build
# under callgrind with one HTTP worker, one keep-alive client. For each endpoint: INSTR_WARMUP requests
# uncounted (caches filled), then INSTR_REQUESTS counted. Only shopchat's user-space instructions are
# counted (not the kernel's, not MariaDB's). Writes bench/RESULTS-instructions.md.
#
#   bench/instructions.sh                          # ~2 min on 2 cores after the release build
#   INSTR_REQUESTS=500 bench/instructions.sh       # quicker
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh instructions

INSTR_REQUESTS="${INSTR_REQUESTS:-2000}"
INSTR_WARMUP="${INSTR_WARMUP:-300}"
INSTR_RESULTS="${INSTR_RESULTS:-bench/RESULTS-instructions.md}"
work="$root/bench/.work/instructions"
mkdir -p "$work"
rm -f "$work"/callgrind.*

command -v valgrind >/dev/null || pmdb_apt_install valgrind || die "valgrind is missing and could not be installed"
command -v python3 >/dev/null || pmdb_apt_install python3 || die "python3 is missing and could not be installed"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
say "cargo build --release"
cargo build --release >&2 || die "building shopchat failed"
bin="$CARGO_TARGET_DIR/release/shopchat"

db_dir="$root/bench/.work/instructions-db"
url="$(pmdb_start "$db_dir" | tail -n 1)" || die "could not start the private MariaDB (see $db_dir/error.log)"
port="${url##*:}"
trap 'kill "${vg:-}" 2>/dev/null || true; pmdb_stop "$db_dir" >/dev/null 2>&1 || true' EXIT
load_fixture "$port" shopchat_instr >&2 || die "loading the fixture failed"
last="$(pmdb_sql "$port" shopchat_instr --batch --skip-column-names \
    -e "SELECT MAX(id) FROM messages WHERE conversation_id = 1")"

listen="127.0.0.1:$(pmdb_free_port 18700)"
say "shopchat under callgrind on $listen"
DB_HOST=127.0.0.1 DB_PORT="$port" DB_DATABASE=shopchat_instr DB_USERNAME=root DB_PASSWORD= \
    APP_KEY="base64:FxO+5zEy133M5/q/XUBpdtp/0srOK9tezZfkWCnyPFc=" APP_URL="http://$listen" \
    APP_TIMEZONE=UTC SYSTEM_KEY=fixture-system-key DEFAULT_LANGUAGE=en MAIL_MAILER=log \
    SHOPCHAT_OUTBOX_DIR="$work/outbox" SHOPCHAT_LISTEN="$listen" SHOPCHAT_RATE_LIMIT=0 \
    SHOPCHAT_WORKERS=1 NO_COLOR=1 \
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$work/callgrind.out" \
    "$bin" serve >"$work/shopchat.log" 2>&1 &
vg=$!

# The fixture's customer 1 (user 5) and the newest message of conversation 1: the poll finds nothing
# new (answered from the watcher's knowledge, no statement), the page and the list read the database.
python3 - "$listen" "$last" "$INSTR_WARMUP" "$INSTR_REQUESTS" "$work" "$vg" <<'PY'
import http.client, json, subprocess, sys, time
listen, last, warmup, n, work, pid = sys.argv[1:]
host, port = listen.rsplit(":", 1)
warmup, n = int(warmup), int(n)
deadline = time.time() + 120
while True:
    try:
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        conn.request("GET", "/health")
        conn.getresponse().read()
        break
    except OSError:
        if time.time() > deadline:
            sys.exit("shopchat did not answer /health under valgrind (see shopchat.log)")
        time.sleep(0.5)
headers = {"Accept": "application/json", "System-Key": "fixture-system-key",
           "Authorization": "Bearer 5|e82dec50eb35333b411bdc59de6c1b222cbf49b6"}
endpoints = [
    ("get-new-messages", f"/api/v2/chat/get-new-messages/1/{last}"),
    ("messages", "/api/v2/chat/messages/1"),
    ("conversations", "/api/v2/chat/conversations"),
]
def send(path, k):
    for _ in range(k):
        conn.request("GET", path, headers=headers)
        res = conn.getresponse()
        body = res.read()
        if res.status != 200:
            sys.exit(f"{path}: HTTP {res.status}: {body[:300]!r}")
    return json.loads(body)
def control(*args):
    subprocess.run(["callgrind_control", *args, pid], check=True, capture_output=True)
for name, path in endpoints:
    body = send(path, warmup)
    if name == "get-new-messages" and body["data"]:
        sys.exit("the poll found messages: it must find nothing new")
    control("-i", "on")
    send(path, n)
    control("-i", "off")
    control("-d", name)
    print(f"{name}\t{n}", flush=True)
PY

kill -TERM "$vg"
wait "$vg" || true
vg=""
commit="$(git rev-parse --short HEAD)"
python3 - "$work" "$INSTR_REQUESTS" "$commit" "$(valgrind --version)" >"$INSTR_RESULTS" <<'PY'
import glob, re, subprocess, sys, datetime
work, n, commit, valgrind = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
dumps = {}
for path in glob.glob(f"{work}/callgrind.out.*"):
    head = open(path, errors="replace").read(4000)
    m = re.search(r"^desc: Trigger: dump (\S+)", head, re.M)
    if m:
        dumps[m.group(1)] = path
def annotate(path):
    out = subprocess.run(["callgrind_annotate", path], capture_output=True, text=True).stdout
    total = int(re.search(r"^([\d,]+) \(100\.0%\)\s+PROGRAM TOTALS", out, re.M).group(1).replace(",", ""))
    rows = []
    for line in out.splitlines():
        m = re.match(r"^\s*([\d,]+) \(\s*([\d.]+)%\)\s+(\S.*?) \[", line)
        if m and "PROGRAM TOTALS" not in line:
            name = m.group(3).split(":", 1)[1] if m.group(3).startswith(("???:", "./")) else m.group(3)
            rows.append((int(m.group(1).replace(",", "")), float(m.group(2)), name))
    return total, rows
print("# shopchat: instructions per request (callgrind)\n")
print(f"Produced by `bench/instructions.sh` (bench/README.md) at commit `{commit}` on "
      f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC with {valgrind}. "
      f"Release build, one HTTP worker, one keep-alive client, the fixture data set; {n:,} requests per "
      "endpoint after a warm-up. Counted: shopchat's user-space instructions (its own code, the "
      "libraries it links, the allocator); not the kernel's (network, scheduling) and not MariaDB's. "
      "The same binary and requests count the same on any machine within about 1 % (what runs by the "
      "clock, such as the message watcher's scans, is counted with the requests).\n")
print("| endpoint | instructions per request | statements |")
print("|---|---:|---|")
notes = {"get-new-messages": "none (nothing new, from the watcher's knowledge)",
         "messages": "page 1 (the total from the watcher's count)",
         "conversations": "page 1 with its total"}
tables = {}
for name in ["get-new-messages", "messages", "conversations"]:
    if name not in dumps:
        sys.exit(f"no callgrind dump for {name}")
    total, rows = annotate(dumps[name])
    tables[name] = rows
    print(f"| {name} | {total / n:,.0f} | {notes[name]} |")
for name, rows in tables.items():
    print(f"\n<details><summary>{name}: functions above 1 % (self)</summary>\n")
    print("| instructions per request | share | function |\n|---:|---:|---|")
    for ir, share, fn in rows:
        if share >= 1.0:
            fn = fn.replace("|", "\\|")
            print(f"| {ir / n:,.0f} | {share:.1f} % | `{fn[:140]}` |")
    print("\n</details>")
PY
say "done: $INSTR_RESULTS"
