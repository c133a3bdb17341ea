#!/usr/bin/env bash
# bench/soak.sh — shopchat under an hour of mixed traffic with many tokens and client addresses:
# RSS, open files and every in-process cache must stay flat (bench/README.md, "Soak").
#
#   bench/soak.sh                       # 60 minutes at 400 requests/s; writes bench/SOAK.md
#   SOAK_MINUTES=10 bench/soak.sh       # shorter
#
# It prepares the quick data set of bench/run.sh (private MariaDB in bench/.work/db; 5,000 users,
# 20,000 tokens, 10,000 client rows per list; the recommended indexes), starts the release build of shopchat with the
# throttle on and 127.0.0.1 trusted as a proxy (so X-Forwarded-For names the simulated clients),
# and runs bench/tools' `soak` load generator against it.
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh soak

SOAK_MINUTES="${SOAK_MINUTES:-60}"
SOAK_RATE="${SOAK_RATE:-400}"
SOAK_SAMPLE="${SOAK_SAMPLE:-30}"
SOAK_RESULTS="${SOAK_RESULTS:-bench/SOAK.md}"
work="$root/bench/.work"
mkdir -p "$work"
# The commit measured is the one built now; the checkout may move on during an hour's run.
commit="$(git rev-parse --short HEAD)"

say "preparing the quick data set (bench/run.sh, BENCH_PREPARE_ONLY)"
prepared="$(BENCH_QUICK=1 BENCH_SAMPLE="${BENCH_SAMPLE:-10000}" BENCH_PREPARE_ONLY=1 bench/run.sh | tail -n 3)" ||
    die "preparing the data set failed"
eval "$prepared"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
say "cargo build --release (bench/tools: soak)"
cargo build --release --manifest-path bench/tools/Cargo.toml --bin soak >&2 || die "building soak failed"

# A tuned shop: the recommended indexes (schema/recommended-indexes.sql), once.
if ! pmdb_sql "$BENCH_DB_PORT" "$BENCH_DB_NAME" --batch --skip-column-names \
    -e "SHOW INDEX FROM messages WHERE Key_name = 'shopchat_messages_conversation_id_id'" | grep -q .; then
    say "applying schema/recommended-indexes.sql"
    pmdb_sql "$BENCH_DB_PORT" "$BENCH_DB_NAME" <schema/recommended-indexes.sql || die "the recommended indexes failed"
fi

port="$(pmdb_free_port 18300)"
metrics="$(pmdb_free_port 18400)"
rm -rf "$work/soak-outbox"
say "shopchat on 127.0.0.1:$port (metrics 127.0.0.1:$metrics), log $work/shopchat-soak.log"
env -i PATH="$PATH" HOME="${HOME:-/root}" \
    DB_HOST=127.0.0.1 DB_PORT="$BENCH_DB_PORT" DB_DATABASE="$BENCH_DB_NAME" DB_USERNAME=root DB_PASSWORD= \
    APP_KEY='base64:FxO+5zEy133M5/q/XUBpdtp/0srOK9tezZfkWCnyPFc=' APP_URL="http://shop.test" APP_TIMEZONE=UTC \
    SYSTEM_KEY=bench-system-key MAIL_MAILER=log RUST_LOG=warn NO_COLOR=1 \
    SHOPCHAT_LISTEN="127.0.0.1:$port" SHOPCHAT_METRICS_LISTEN="127.0.0.1:$metrics" \
    SHOPCHAT_TRUSTED_PROXIES=127.0.0.1 SHOPCHAT_OUTBOX_DIR="$work/soak-outbox" \
    "$CARGO_TARGET_DIR/release/shopchat" serve >"$work/shopchat-soak.log" 2>&1 &
pid=$!
stop() {
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    pmdb_stop "$work/db" || true
}
trap stop EXIT
for _ in $(seq 1 100); do
    pmdb_port_answers "$port" && break
    sleep 0.2
done
pmdb_port_answers "$port" || die "shopchat did not start (log: $work/shopchat-soak.log)"

say "soak: $SOAK_MINUTES min at $SOAK_RATE requests/s"
out="$("$CARGO_TARGET_DIR/release/soak" --base "http://127.0.0.1:$port" --metrics "127.0.0.1:$metrics" \
    --pid "$pid" --clients-dir "$BENCH_CLIENTS_DIR" --minutes "$SOAK_MINUTES" --rate "$SOAK_RATE" \
    --sample "$SOAK_SAMPLE" --out "$work/soak.csv")" || die "the soak load failed"
json="$(printf '%s\n' "$out" | sed -n 's/^BENCH_JSON //p')"
warnings="$(grep -c -E ' (WARN|ERROR) ' "$work/shopchat-soak.log" || true)"
rc=0
python3 bench/soak_report.py "$work/soak.csv" "$json" "$warnings" "$commit" >"$SOAK_RESULTS" || rc=$?
case "$rc" in
0) say "done: $SOAK_RESULTS (flat)" ;;
1) die "something grew: see $SOAK_RESULTS" ;;
*) die "writing $SOAK_RESULTS failed" ;;
esac
