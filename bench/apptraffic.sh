#!/usr/bin/env bash
# bench/apptraffic.sh — simulated app users (bench/tools' `apptraffic`, open loop) against shopchat on
# the full benchmark data set with the recommended indexes. For each number of users in
# APP_USERS it starts a fresh shopchat, runs the simulation (APP_WARMUP s, then APP_SECONDS s
# measured), removes the messages it wrote, and at the end writes bench/RESULTS-apptraffic.md:
# the largest number of users served with p99 < 50 ms and no error, and every step's figures.
#
#   bench/apptraffic.sh                              # the default ramp (10,000 … 50,000), ~9 min on 2 cores
#   APP_USERS="20000 50000" bench/apptraffic.sh      # chosen steps
#   APP_HEAPTRACK=1 APP_USERS=20000 bench/apptraffic.sh
#       # a heap profile of what outlives the load: shopchat built with glibc's malloc
#       # (feature system-allocator) runs under heaptrack, idles APP_IDLE_SECONDS after the
#       # load, and is killed there; bench/RESULTS-heap.md gets what was still allocated
#       # (bench/README.md "Memory"). The ramp's report is not written in this mode.
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh apptraffic

APP_USERS="${APP_USERS:-10000 20000 30000 40000 50000}"
APP_SECONDS="${APP_SECONDS:-45}"
# Users arrive (open the chat screen) spread over APP_ARRIVALS s, as a shop's traffic builds up;
# the measured part starts after APP_WARMUP s, a steady state. APP_ARRIVALS=5 (with APP_WARMUP=15)
# opens every screen within one poll period instead: the cold-start herd, which the database's
# ceiling for the list and page 1 drains (bench/README.md).
APP_ARRIVALS="${APP_ARRIVALS:-30}"
APP_WARMUP="${APP_WARMUP:-40}"
APP_LEAKY="${APP_LEAKY:-10}"
APP_CONNECTIONS="${APP_CONNECTIONS:-1024}"
APP_RESULTS="${APP_RESULTS:-bench/RESULTS-apptraffic.md}"
# The shop's per-account budget (600/min) is for one person; a seller account here carries dozens
# of simulated app sessions, so the throttle runs (its cost is measured) with a higher ceiling.
APP_RATE_LIMIT="${APP_RATE_LIMIT:-100000}"
# More settings for shopchat, for experiments: APP_SHOPCHAT_ENV="SHOPCHAT_TOKEN_TOUCH_SECONDS=600 …".
APP_SHOPCHAT_ENV="${APP_SHOPCHAT_ENV:-}"
APP_HEAPTRACK="${APP_HEAPTRACK:-0}"
# Idle time before the heap is read: past shopchat's idle release (60 s without a request).
APP_IDLE_SECONDS="${APP_IDLE_SECONDS:-66}"
APP_HEAP_RESULTS="${APP_HEAP_RESULTS:-bench/RESULTS-heap.md}"
work="$root/bench/.work"
mkdir -p "$work"
commit="$(git rev-parse --short HEAD)"

say "preparing the full data set (bench/run.sh, BENCH_PREPARE_ONLY)"
prepared="$(BENCH_PREPARE_ONLY=1 bench/run.sh | tail -n 3)" || die "preparing the data set failed"
eval "$prepared"
users_in_set="${BENCH_USERS:-50000}"
tokens_in_set="${BENCH_TOKENS:-200000}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
say "cargo build --release (shopchat, bench/tools: apptraffic)"
cargo build --release >&2 || die "building shopchat failed"
shopchat_bin="$CARGO_TARGET_DIR/release/shopchat"
launcher=()
if [[ "$APP_HEAPTRACK" == 1 ]]; then
    command -v heaptrack >/dev/null && command -v heaptrack_print >/dev/null ||
        die "APP_HEAPTRACK=1 needs heaptrack (Debian: apt-get install -y heaptrack)"
    # heaptrack hooks malloc; mimalloc's own pages would be invisible to it.
    say "cargo build --release --features system-allocator (for heaptrack)"
    cargo build --release --features system-allocator >&2 || die "building shopchat (system-allocator) failed"
    mkdir -p "$work/heaptrack-bin"
    # Named `shopchat` so that the process is found by name under heaptrack's script.
    cp "$CARGO_TARGET_DIR/release/shopchat" "$work/heaptrack-bin/shopchat"
    shopchat_bin="$work/heaptrack-bin/shopchat"
    rm -f "$work"/heap-*.zst "$work"/heap-*.gz
fi
cargo build --release --manifest-path bench/tools/Cargo.toml --bin apptraffic >&2 || die "building apptraffic failed"

if ! pmdb_sql "$BENCH_DB_PORT" "$BENCH_DB_NAME" --batch --skip-column-names \
    -e "SHOW INDEX FROM messages WHERE Key_name = 'shopchat_messages_conversation_id_id'" | grep -q .; then
    say "applying schema/recommended-indexes.sql"
    pmdb_sql "$BENCH_DB_PORT" "$BENCH_DB_NAME" <schema/recommended-indexes.sql || die "the recommended indexes failed"
fi

max_users=0
for n in $APP_USERS; do ((n > max_users)) && max_users=$n; done
say "choosing $max_users simulated users (bench/sql/apptraffic.sql)"
sed -e "s/@USERS@/$users_in_set/g; s/@TOKENS@/$tokens_in_set/g" \
    -e "s/@TOKENS_PER_USER@/$((tokens_in_set / users_in_set))/g; s/@PAIRS@/$(((max_users + 1) / 2))/g" \
    bench/sql/apptraffic.sql >"$work/apptraffic.sql"
pmdb_sql "$BENCH_DB_PORT" "$BENCH_DB_NAME" --batch --skip-column-names <"$work/apptraffic.sql" >"$work/pairs.tsv" ||
    die "choosing the users failed"
have="$(wc -l <"$work/pairs.tsv")"
((have >= max_users)) || die "the data set yields $have simulated users, $max_users asked for"

pid=""
stop_shopchat() {
    if [[ -n "$pid" ]]; then
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        pid=""
    fi
}
cleanup() {
    stop_shopchat
    pmdb_stop "$work/db" || true
}
trap cleanup EXIT

results="$work/apptraffic.jsonl"
: >"$results"
for n in $APP_USERS; do
    port="$(pmdb_free_port 18500)"
    rm -rf "$work/apptraffic-outbox"
    [[ "$APP_HEAPTRACK" == 1 ]] && launcher=(heaptrack -o "$work/heap-$n")
    env -i PATH="$PATH" HOME="${HOME:-/root}" \
        DB_HOST=127.0.0.1 DB_PORT="$BENCH_DB_PORT" DB_DATABASE="$BENCH_DB_NAME" DB_USERNAME=root DB_PASSWORD= \
        APP_KEY='base64:FxO+5zEy133M5/q/XUBpdtp/0srOK9tezZfkWCnyPFc=' APP_URL="http://shop.test" APP_TIMEZONE=UTC \
        SYSTEM_KEY=bench-system-key MAIL_MAILER=log NO_COLOR=1 \
        SHOPCHAT_LISTEN="127.0.0.1:$port" SHOPCHAT_RATE_LIMIT="$APP_RATE_LIMIT" \
        SHOPCHAT_OUTBOX_DIR="$work/apptraffic-outbox" $APP_SHOPCHAT_ENV \
        ${launcher[@]+"${launcher[@]}"} "$shopchat_bin" serve >"$work/shopchat-apptraffic-$n.log" 2>&1 &
    pid=$!
    heaptrack_pid=""
    if [[ "$APP_HEAPTRACK" == 1 ]]; then
        # heaptrack is a script that runs shopchat as its child: the measurements need
        # shopchat's own pid.
        heaptrack_pid=$pid
        pid=""
        for _ in $(seq 1 100); do
            pid="$(pgrep -P "$heaptrack_pid" -x shopchat || true)"
            [[ -n "$pid" ]] && break
            sleep 0.1
        done
        [[ -n "$pid" ]] || die "shopchat did not start under heaptrack (log: $work/shopchat-apptraffic-$n.log)"
    fi
    for _ in $(seq 1 100); do
        pmdb_port_answers "$port" && break
        sleep 0.2
    done
    pmdb_port_answers "$port" || die "shopchat did not start (log: $work/shopchat-apptraffic-$n.log)"
    before="$(pmdb_sql "$BENCH_DB_PORT" "$BENCH_DB_NAME" --batch --skip-column-names -e "SELECT COALESCE(MAX(id), 0) FROM messages")"
    say "$n users: ${APP_WARMUP} s warm-up, ${APP_SECONDS} s measured"
    out="$("$CARGO_TARGET_DIR/release/apptraffic" --base "http://127.0.0.1:$port" --pid "$pid" \
        --pairs "$work/pairs.tsv" --users "$n" --seconds "$APP_SECONDS" --warmup "$APP_WARMUP" \
        --arrivals "$APP_ARRIVALS" --connections "$APP_CONNECTIONS" --leaky "$APP_LEAKY" \
        --db-url "mysql://root@127.0.0.1:$BENCH_DB_PORT/$BENCH_DB_NAME" \
        --db-pid "$(cat "$work/db/mysqld.pid")")" || die "apptraffic failed at $n users"
    json="$(printf '%s\n' "$out" | sed -n 's/^BENCH_JSON //p')"
    printf '%s\n' "$json" >>"$results"
    printf '%s\n' "$json" >&2
    if [[ "$APP_HEAPTRACK" == 1 ]]; then
        say "$n users: idle for ${APP_IDLE_SECONDS} s, then the heap as it is (SIGKILL: nothing freed at exit)"
        sleep "$APP_IDLE_SECONDS"
        grep -E '^(VmRSS|RssAnon|RssFile|VmHWM):' "/proc/$pid/status" >"$work/heap-$n.status"
        kill -KILL "$pid"
        wait "$heaptrack_pid" 2>/dev/null || true
        pid=""
        data=""
        for candidate in "$work/heap-$n".zst "$work/heap-$n".gz; do
            [[ -f "$candidate" ]] && data="$candidate" && break
        done
        [[ -n "$data" ]] || die "heaptrack wrote no data (log: $work/shopchat-apptraffic-$n.log)"
        heaptrack_print --print-leaks=1 --print-peaks=0 --print-allocators=0 --print-temporary=0 \
            --peak-limit=40 --file "$data" >"$work/heap-$n.txt" || die "heaptrack_print failed"
        python3 bench/heap_report.py "$work/heap-$n.txt" "$work/heap-$n.status" "$commit" "$n" \
            "$APP_IDLE_SECONDS" "$APP_CONNECTIONS" >"$APP_HEAP_RESULTS" || die "writing $APP_HEAP_RESULTS failed"
        say "heap profile: $APP_HEAP_RESULTS (heaptrack data: $data)"
    fi
    stop_shopchat
    # The run's messages go, so that the next step (and bench/run.sh) start from the same data.
    pmdb_sql "$BENCH_DB_PORT" "$BENCH_DB_NAME" -e "DELETE FROM messages WHERE id > $before" ||
        die "removing the run's messages failed"
done
pmdb_sql "$BENCH_DB_PORT" "$BENCH_DB_NAME" -e "DELETE FROM personal_access_tokens WHERE id > $tokens_in_set; DROP TABLE IF EXISTS apptraffic_pairs" || true

[[ "$APP_HEAPTRACK" == 1 ]] && exit 0
python3 bench/apptraffic_report.py "$results" "$commit" "$APP_SECONDS" "$APP_WARMUP" "$APP_ARRIVALS" "$APP_LEAKY" \
    "$APP_CONNECTIONS" >"$APP_RESULTS" || die "writing $APP_RESULTS failed"
say "done: $APP_RESULTS"
