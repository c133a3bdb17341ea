#!/usr/bin/env bash
# bench/run.sh — the shopchat benchmark, one command (see bench/README.md).
#
#   bench/run.sh                 # full run (~15-20 min on 2 cores), writes bench/RESULTS.md
#   BENCH_QUICK=1 bench/run.sh   # smoke test: small data set, short runs, writes bench/.work/RESULTS-quick.md
#
# Steps: private MariaDB (scripts/private-mariadb.sh, larger buffer pool) in $BENCH_DIR/db ->
# schema/shop.sql + generated data set (bench/sql/generate.sql) -> client lists (bench/sql/clients.sql)
# -> release builds of shopchat and bench/tools (dbceiling, longpoll) -> bench/driver.py (wrk against shopchat and the
# database-ceiling tool, both index variants) -> RESULTS.md. Everything listens on 127.0.0.1 only.
#
# Every knob is an environment variable (defaults below). The data set is reused between runs when
# its sizes did not change (BENCH_REGENERATE=1 forces a new one); the database server is stopped at
# the end unless BENCH_KEEP_DB=1.
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh bench

if [[ "${BENCH_QUICK:-0}" == 1 ]]; then
    : "${BENCH_USERS:=5000}" "${BENCH_SELLERS:=200}" "${BENCH_PRODUCTS:=1000}" "${BENCH_TOKENS:=20000}"
    : "${BENCH_CONVERSATIONS:=10000}" "${BENCH_MESSAGES:=100000}" "${BENCH_SAMPLE:=2000}"
    : "${BENCH_CONNECTIONS:=1 16}" "${BENCH_DURATION:=2}" "${BENCH_DB_DURATION:=1}" "${BENCH_WARMUP:=1}"
    : "${BENCH_DB_NAME:=shopchat_bench_quick}" "${BENCH_RESULTS:=bench/.work/RESULTS-quick.md}"
    : "${BENCH_LONGPOLL_WAITERS:=1000}" "${BENCH_LONGPOLL_HOLD:=3}"
fi
export BENCH_DIR="${BENCH_DIR:-bench/.work}"
export BENCH_USERS="${BENCH_USERS:-50000}"
export BENCH_SELLERS="${BENCH_SELLERS:-2000}"
export BENCH_PRODUCTS="${BENCH_PRODUCTS:-10000}"
export BENCH_TOKENS="${BENCH_TOKENS:-200000}"
export BENCH_CONVERSATIONS="${BENCH_CONVERSATIONS:-100000}"
export BENCH_MESSAGES="${BENCH_MESSAGES:-1000000}"
# Distinct simulated app users per endpoint (rows of each client list = distinct tokens).
export BENCH_SAMPLE="${BENCH_SAMPLE:-50000}"
export BENCH_CONNECTIONS="${BENCH_CONNECTIONS:-1 16 64 256}"
export BENCH_DURATION="${BENCH_DURATION:-10}"
export BENCH_DB_DURATION="${BENCH_DB_DURATION:-5}"
export BENCH_WARMUP="${BENCH_WARMUP:-3}"
export BENCH_VARIANTS="${BENCH_VARIANTS:-pk recommended}"
export BENCH_ENDPOINTS="${BENCH_ENDPOINTS:-get-new-messages messages conversations insert-message create-conversation}"
export BENCH_BUFFER_POOL_MB="${BENCH_BUFFER_POOL_MB:-1024}"
export BENCH_DB_NAME="${BENCH_DB_NAME:-shopchat_bench}"
export BENCH_RESULTS="${BENCH_RESULTS:-bench/RESULTS.md}"
export BENCH_PERF="${BENCH_PERF:-1}"
# Long-poll test (last variant only): held waiters (0 skips it) and the measuring window in seconds.
export BENCH_LONGPOLL_WAITERS="${BENCH_LONGPOLL_WAITERS:-10000}"
export BENCH_LONGPOLL_HOLD="${BENCH_LONGPOLL_HOLD:-10}"
export BENCH_SYSTEM_KEY="${BENCH_SYSTEM_KEY:-bench-system-key}"

[[ "$BENCH_TOKENS" -ge "$BENCH_USERS" ]] || die "BENCH_TOKENS must be >= BENCH_USERS (every user has a token)"
[[ "$BENCH_MESSAGES" -ge "$BENCH_CONVERSATIONS" ]] || die "BENCH_MESSAGES must be >= BENCH_CONVERSATIONS"
[[ "$BENCH_SELLERS" -lt "$((BENCH_USERS - 1))" ]] || die "BENCH_SELLERS must leave customers"

started_at=$(date +%s)

# ------------------------------------------------------------------ tools
need_apt=()
command -v wrk >/dev/null 2>&1 || need_apt+=(wrk)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
if [[ "$BENCH_PERF" == 1 ]] && ! command -v perf >/dev/null 2>&1; then
    need_apt+=(linux-perf)
fi
if ((${#need_apt[@]})); then
    say "installing ${need_apt[*]} (Debian packages)"
    pmdb_apt_install "${need_apt[@]}" || true
fi
command -v wrk >/dev/null 2>&1 || die "wrk is missing (Debian package: wrk)"
command -v python3 >/dev/null 2>&1 || die "python3 is missing (Debian package: python3)"
command -v cargo >/dev/null 2>&1 || die "cargo is missing"

mkdir -p "$BENCH_DIR"
BENCH_DIR="$(cd "$BENCH_DIR" && pwd)"
export BENCH_DIR

# ------------------------------------------------------------------ builds (before the database: the
# compiler must not compete with the measurements, and it runs while nothing else of ours does)
say "cargo build --release --bin shopchat"
cargo build --release --bin shopchat >&2 || die "building shopchat failed"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
say "cargo build --release (bench/tools: dbceiling, longpoll)"
cargo build --release --manifest-path bench/tools/Cargo.toml >&2 || die "building bench/tools failed"
export BENCH_SHOPCHAT_BIN="$CARGO_TARGET_DIR/release/shopchat"
export BENCH_DBCEILING_BIN="$CARGO_TARGET_DIR/release/dbceiling"
export BENCH_LONGPOLL_BIN="$CARGO_TARGET_DIR/release/longpoll"

# ------------------------------------------------------------------ database server
say "private MariaDB in $BENCH_DIR/db"
url="$(pmdb_start "$BENCH_DIR/db" | tail -n 1)" || die "could not start the private MariaDB (see $BENCH_DIR/db/error.log)"
export BENCH_DB_PORT="${url##*:}"
stop_db() {
    if [[ "${BENCH_KEEP_DB:-0}" != 1 ]]; then
        pmdb_stop "$BENCH_DIR/db" || true
    else
        say "the database keeps running: scripts/private-mariadb.sh stop $BENCH_DIR/db"
    fi
}
trap stop_db EXIT
sql() { pmdb_sql "$BENCH_DB_PORT" "$@"; }

# The private server starts with a 64 MB buffer pool; the data set needs the whole working set in
# memory (both are dynamic in MariaDB >= 10.9). A bigger redo log speeds up the bulk load.
sql -e "SET GLOBAL innodb_buffer_pool_size = ${BENCH_BUFFER_POOL_MB} * 1024 * 1024;
        SET GLOBAL innodb_log_file_size = 512 * 1024 * 1024;
        SET GLOBAL max_connections = 1000" || die "could not tune the server"
# Resizing the buffer pool is asynchronous: wait until it is done.
for _ in $(seq 1 120); do
    status="$(sql --batch --skip-column-names -e "SHOW STATUS LIKE 'Innodb_buffer_pool_resize_status'" | cut -f2)"
    [[ -z "$status" || "$status" == *"Completed"* || "$status" == *"completed"* ]] && break
    sleep 0.5
done

# ------------------------------------------------------------------ data set
sizes="users=$BENCH_USERS sellers=$BENCH_SELLERS products=$BENCH_PRODUCTS tokens=$BENCH_TOKENS conversations=$BENCH_CONVERSATIONS messages=$BENCH_MESSAGES"
marker="$BENCH_DIR/data-$BENCH_DB_NAME.sizes"
db_exists="$(sql --batch --skip-column-names -e "SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name = '$BENCH_DB_NAME'")"
substitute() {
    sed -e "s/@USERS@/$BENCH_USERS/g; s/@SELLERS@/$BENCH_SELLERS/g; s/@PRODUCTS@/$BENCH_PRODUCTS/g" \
        -e "s/@TOKENS@/$BENCH_TOKENS/g; s/@CONVS@/$BENCH_CONVERSATIONS/g; s/@MSGS@/$BENCH_MESSAGES/g" \
        -e "s/@HEADER_UPLOAD@/$((BENCH_SELLERS + 1))/g; s/@TOKENS_PER_USER@/$((BENCH_TOKENS / BENCH_USERS))/g" \
        -e "s/@SAMPLE@/$BENCH_SAMPLE/g; s/@SAMPLE2@/$((BENCH_SAMPLE * 2))/g" "$1"
}
if [[ "${BENCH_REGENERATE:-0}" != 1 && "$db_exists" == 1 && -f "$marker" && "$(cat "$marker")" == "$sizes" ]]; then
    say "reusing the data set in $BENCH_DB_NAME ($sizes)"
    echo 0 >"$BENCH_DIR/generate-seconds"
else
    say "generating the data set into $BENCH_DB_NAME ($sizes)"
    rm -f "$marker"
    gen_start=$(date +%s)
    sql -e "DROP DATABASE IF EXISTS \`$BENCH_DB_NAME\`; CREATE DATABASE \`$BENCH_DB_NAME\` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
    sql "$BENCH_DB_NAME" <schema/shop.sql || die "loading schema/shop.sql failed"
    substitute bench/sql/generate.sql | sql "$BENCH_DB_NAME" >/dev/null || die "generating the data failed"
    echo $(($(date +%s) - gen_start)) >"$BENCH_DIR/generate-seconds"
    printf '%s\n' "$sizes" >"$marker"
    rm -rf "$BENCH_DIR/clients-$BENCH_DB_NAME"
fi

# The client lists are made from the original rows (before any index variant or write).
clients_dir="$BENCH_DIR/clients-$BENCH_DB_NAME-$BENCH_SAMPLE"
if [[ ! -s "$clients_dir/creators.tsv" ]]; then
    say "choosing the benchmark clients ($BENCH_SAMPLE per endpoint)"
    mkdir -p "$clients_dir"
    # A fresh data set may still carry indexes of an interrupted run; they do not change the rows.
    for set in pollers listers writers creators; do
        awk -v s="$set" '/^-- set: /{on=($3==s); next} on && !/^--/' bench/sql/clients.sql |
            substitute /dev/stdin |
            sql "$BENCH_DB_NAME" --batch --skip-column-names >"$clients_dir/$set.tsv" ||
            die "choosing the $set failed"
        [[ -s "$clients_dir/$set.tsv" ]] || die "no $set chosen"
    done
fi
# The one-client set (added later than the others: made for existing lists too).
if [[ ! -s "$clients_dir/hot.tsv" ]]; then
    awk '/^-- set: /{on=($3=="hot"); next} on && !/^--/' bench/sql/clients.sql |
        substitute /dev/stdin |
        sql "$BENCH_DB_NAME" --batch --skip-column-names >"$clients_dir/hot.tsv" ||
        die "choosing the hot client failed"
    [[ -s "$clients_dir/hot.tsv" ]] || die "no hot client chosen"
fi
export BENCH_CLIENTS_DIR="$clients_dir"

# bench/soak.sh needs the server, the data set and the client lists, not the measurements.
if [[ "${BENCH_PREPARE_ONLY:-0}" == 1 ]]; then
    trap - EXIT
    printf 'BENCH_DB_PORT=%s\nBENCH_DB_NAME=%s\nBENCH_CLIENTS_DIR=%s\n' \
        "$BENCH_DB_PORT" "$BENCH_DB_NAME" "$BENCH_CLIENTS_DIR"
    exit 0
fi

# ------------------------------------------------------------------ measurements
export BENCH_ROOT="$root"
export BENCH_STARTED_AT="$started_at"
python3 bench/driver.py || die "the driver failed"
say "done in $(($(date +%s) - started_at)) s: $BENCH_RESULTS"
