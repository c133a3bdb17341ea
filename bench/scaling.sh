#!/usr/bin/env bash
# bench/scaling.sh — what N shopchat instances cost the shop's database (docs/scaling.md).
#
# On the full benchmark data set (recommended indexes), bench/tools' `watcherload` plays N message
# watchers — each on its own connection, running the watcher's own statement and cursor rule every
# 100 ms — while a writer inserts W messages a second, for each N in SCALE_INSTANCES and W in
# SCALE_WRITES, and measures scans/s, rows per scan, scan latency and mariadbd's CPU.
# Writes bench/RESULTS-scaling.md.
#
#   bench/scaling.sh                                        # ~4 min on 2 cores
#   SCALE_INSTANCES="1 100" SCALE_WRITES="10" bench/scaling.sh
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh scaling

SCALE_INSTANCES="${SCALE_INSTANCES:-1 10 30 100}"
SCALE_WRITES="${SCALE_WRITES:-1 10 100}"
SCALE_SECONDS="${SCALE_SECONDS:-10}"
SCALE_RESULTS="${SCALE_RESULTS:-bench/RESULTS-scaling.md}"
work="$root/bench/.work"
mkdir -p "$work"
commit="$(git rev-parse --short HEAD)"

say "preparing the full data set (bench/run.sh, BENCH_PREPARE_ONLY)"
prepared="$(BENCH_PREPARE_ONLY=1 bench/run.sh | tail -n 3)" || die "preparing the data set failed"
eval "$prepared"
trap 'pmdb_stop "$work/db" || true' EXIT
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
say "cargo build --release (bench/tools: watcherload)"
cargo build --release --manifest-path bench/tools/Cargo.toml --bin watcherload >&2 || die "building watcherload failed"

if ! pmdb_sql "$BENCH_DB_PORT" "$BENCH_DB_NAME" --batch --skip-column-names \
    -e "SHOW INDEX FROM messages WHERE Key_name = 'shopchat_messages_conversation_id_id'" | grep -q .; then
    say "applying schema/recommended-indexes.sql"
    pmdb_sql "$BENCH_DB_PORT" "$BENCH_DB_NAME" <schema/recommended-indexes.sql || die "the recommended indexes failed"
fi
max_instances=0
for n in $SCALE_INSTANCES; do ((n > max_instances)) && max_instances=$n; done
pmdb_sql "$BENCH_DB_PORT" "$BENCH_DB_NAME" -e "SET GLOBAL max_connections = GREATEST(@@max_connections, $((max_instances + 50)))"
db_pid="$(pmdb_pid "$work/db")" || db_pid=""
[[ -n "$db_pid" ]] || die "no mariadbd pid"
# A conversation no benchmark client reads (ids that are multiples of 10 are the writers').
conversation="$(pmdb_sql "$BENCH_DB_PORT" "$BENCH_DB_NAME" --batch --skip-column-names \
    -e "SELECT MIN(id) FROM conversations WHERE id % 10 = 0")"

results="$work/scaling.jsonl"
: >"$results"
for w in $SCALE_WRITES; do
    for n in $SCALE_INSTANCES; do
        say "watcherload: $n instances, $w messages/s ($SCALE_SECONDS s after a 10 s warm-up)"
        "$CARGO_TARGET_DIR/release/watcherload" \
            --url "mysql://root@127.0.0.1:$BENCH_DB_PORT/$BENCH_DB_NAME" \
            --instances "$n" --writes-per-second "$w" --seconds "$SCALE_SECONDS" \
            --db-pid "$db_pid" --conversation "$conversation" |
            sed -n 's/^BENCH_JSON //p' >>"$results"
        tail -n 1 "$results" >&2
    done
done

machine="$(nproc) cores, $(awk '/MemTotal/ {printf "%.1f GB", $2/1048576}' /proc/meminfo)"
server="$(pmdb_sql "$BENCH_DB_PORT" "$BENCH_DB_NAME" --batch --skip-column-names -e 'SELECT VERSION()')"
python3 - "$results" "$SCALE_RESULTS" "$commit" "$machine" "$server" <<'PY'
import json, sys, datetime
src, dst, commit, machine, server = sys.argv[1:6]
rows = [json.loads(l) for l in open(src) if l.strip()]
out = []
out.append("# What N instances' message watchers cost the database\n")
out.append(f"Written by `bench/scaling.sh` on {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC from commit `{commit}`; "
           f"{machine}, {server}, the full benchmark data set (1,000,000 messages, recommended indexes). "
           "How to read it: [docs/scaling.md](../docs/scaling.md).\n")
out.append("`watcherload` plays N instances' watchers: each its own connection, the watcher's own statement "
           "(`WATCH_SCAN` of src/chat/sql.rs) from the oldest high-water mark of the last 10 s, every 100 ms, "
           "while a writer inserts W messages/s. A simulation of the instances (one process, the statements real); "
           "the database, its data and its CPU are real. `late` = scans that took longer than the 100 ms period.\n")
out.append("| instances | messages/s written | scans/s | rows per scan | rows read/s | scan p50 µs | scan p99 µs | late scans | mariadbd CPU (cores) |")
out.append("|---|---|---|---|---|---|---|---|---|")
for r in rows:
    cpu = r.get("db_cpu_cores")
    out.append(f"| {r['instances']} | {r['writes_per_second']} | {r['scans_per_second']:,.0f} | {r['rows_per_scan']:,.1f} | "
               f"{r['rows_per_second']:,.0f} | {r['scan_p50_us']:,} | {r['scan_p99_us']:,} | {r['late_periods']} | "
               f"{'–' if cpu is None else f'{cpu:.2f}'} |")
out.append("")
open(dst, "w").write("\n".join(out) + "\n")
print(dst)
PY
say "done: $SCALE_RESULTS"
