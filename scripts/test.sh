#!/usr/bin/env bash
# test.sh — run the whole test suite (CI runs this through .ci/run).
#
#   scripts/test.sh           fmt check, clippy, cargo test, then the golden replay with ../shared's parity.py
#   scripts/test.sh --quick   fmt check and cargo test only (local iteration)
#
# Database: unless SHOPCHAT_TEST_DATABASE_URL is already set (mysql://user[:password]@host:port, a
# server whose default time zone is UTC), a private MariaDB is started in a fresh temporary directory
# and removed on exit; SHOPCHAT_TEST_DATABASE_URL=mysql://root@127.0.0.1:PORT is exported to the tests,
# which create and drop their own databases on that server.
set -euo pipefail

cd "$(dirname "$0")/.."
root="$(pwd)"
# shellcheck source=scripts/private-mariadb.sh
source "$root/scripts/private-mariadb.sh"

usage() {
    sed -n '2,10s/^# \{0,1\}//p' "$root/scripts/test.sh"
}

quick=0
for arg in "$@"; do
    case "$arg" in
    --quick) quick=1 ;;
    -h | --help)
        usage
        exit 0
        ;;
    *)
        printf 'test.sh: unknown argument: %s\n\n' "$arg" >&2
        usage >&2
        exit 2
        ;;
    esac
done

step_no=0
step_total=0
step_started=0
skipped=()

header() {
    step_no=$((step_no + 1))
    step_started=$SECONDS
    printf '\n==> [%d/%d] %s\n' "$step_no" "$step_total" "$*"
}
step_ok() {
    printf -- '--> ok (%ds)\n' "$((SECONDS - step_started))"
}
note() { printf 'test.sh: %s\n' "$*" >&2; }
fail() {
    printf '\ntest.sh: FAILED: %s\n' "$*" >&2
    exit 1
}
# run_step TITLE CMD...: prints the header, runs CMD, stops the suite on failure.
run_step() {
    local title="$1" rc=0
    shift
    header "$title"
    "$@" || rc=$?
    [[ "$rc" -eq 0 ]] || fail "$title (exit code $rc)"
    step_ok
}

# --- cleanup: the service of the golden replay, the private database --------------------------------
db_dir=""
svc_pid=""
stop_service() {
    [[ -n "$svc_pid" ]] || return 0
    if kill -0 "$svc_pid" 2>/dev/null; then
        kill -TERM "$svc_pid" 2>/dev/null || true
        local i
        for i in $(seq 1 40); do
            kill -0 "$svc_pid" 2>/dev/null || break
            sleep 0.25
        done
        kill -KILL "$svc_pid" 2>/dev/null || true
    fi
    wait "$svc_pid" 2>/dev/null || true
    svc_pid=""
}
cleanup() {
    local rc=$?
    set +e
    stop_service
    if [[ -n "$db_dir" ]]; then
        pmdb_stop "$db_dir"
        rm -rf "$db_dir"
        db_dir=""
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'note "interrupted"; exit 130' INT
trap 'note "terminated"; exit 143' TERM

# --- what will run ----------------------------------------------------------------------------------
shared_parity="$root/../shared/golden/parity.py"
run_clippy=1
run_golden=1
if [[ "$quick" -eq 1 ]]; then
    run_clippy=0
    run_golden=0
    skipped+=("clippy (--quick)" "golden replay (--quick)")
elif [[ ! -f "$shared_parity" ]]; then
    run_golden=0
    skipped+=("external golden replay: ../shared/golden/parity.py not found (the cargo tests already replay the golden set)")
fi

# --- toolchain --------------------------------------------------------------------------------------
command -v cargo >/dev/null 2>&1 || fail "cargo not found: install the Rust toolchain (rustup) first"
missing_components=()
cargo fmt --version >/dev/null 2>&1 || missing_components+=(rustfmt)
if [[ "$run_clippy" -eq 1 ]]; then
    cargo clippy --version >/dev/null 2>&1 || missing_components+=(clippy)
fi
if [[ ${#missing_components[@]} -gt 0 ]]; then
    note "missing toolchain components: ${missing_components[*]}; trying rustup component add"
    if command -v rustup >/dev/null 2>&1; then
        rustup component add "${missing_components[@]}" ||
            note "warning: rustup component add ${missing_components[*]} failed"
    else
        note "warning: rustup not found; cannot add ${missing_components[*]}"
    fi
fi
run_fmt=1
if ! cargo fmt --version >/dev/null 2>&1; then
    run_fmt=0
    skipped+=("cargo fmt: rustfmt is not installed (rustup component add rustfmt)")
fi
if [[ "$run_clippy" -eq 1 ]] && ! cargo clippy --version >/dev/null 2>&1; then
    run_clippy=0
    skipped+=("cargo clippy: clippy is not installed (rustup component add clippy)")
fi
step_total=$((1 + run_fmt + 2 * run_clippy + 1 + run_golden))

# --- database ---------------------------------------------------------------------------------------
if [[ -n "${SHOPCHAT_TEST_DATABASE_URL:-}" ]]; then
    pmdb_parse_target "$SHOPCHAT_TEST_DATABASE_URL" || fail "SHOPCHAT_TEST_DATABASE_URL is not usable"
    header "database: SHOPCHAT_TEST_DATABASE_URL (server $PMDB_DB_USER@$PMDB_DB_HOST:$PMDB_DB_PORT)"
    step_ok
else
    header "database: private MariaDB in a temporary directory"
    db_dir="$(mktemp -d "${TMPDIR:-/tmp}/shopchat-test-db.XXXXXX")"
    db_url="$(pmdb_start "$db_dir" | tail -n 1)" || fail "could not start a private MariaDB (log: $db_dir/error.log)"
    export SHOPCHAT_TEST_DATABASE_URL="$db_url"
    printf 'SHOPCHAT_TEST_DATABASE_URL=%s\n' "$SHOPCHAT_TEST_DATABASE_URL"
    step_ok
fi

# --- cargo ------------------------------------------------------------------------------------------
# tests/api/nginx.rs runs the cutover kit of deploy/nginx/ in a real nginx (Debian's nginx-light).
if ! command -v nginx >/dev/null 2>&1 && [[ ! -x /usr/sbin/nginx ]]; then
    pmdb_apt_install nginx-light || note "warning: nginx-light could not be installed; the nginx test will fail"
fi
# tests/api/redis_store.rs starts private redis-server processes (Debian's redis-server).
if ! command -v redis-server >/dev/null 2>&1 && [[ ! -x /usr/bin/redis-server ]]; then
    pmdb_apt_install redis-server || note "warning: redis-server could not be installed; the Redis tests will fail"
fi
if [[ "$run_fmt" -eq 1 ]]; then
    run_step "cargo fmt --all -- --check (and bench/tools)" \
        bash -c 'cargo fmt --all -- --check && cargo fmt --manifest-path bench/tools/Cargo.toml --all -- --check'
fi
if [[ "$run_clippy" -eq 1 ]]; then
    run_step "cargo clippy --all-targets -- -D warnings" cargo clippy --all-targets -- -D warnings
    # The benchmark's tools use the library (the throttle, the SQL text): they must keep building.
    run_step "cargo clippy (bench/tools) -- -D warnings" \
        env CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}" \
        cargo clippy --manifest-path bench/tools/Cargo.toml --bins -- -D warnings
fi
run_step "cargo test --all-targets" cargo test --all-targets

# --- golden replay with the shared parity tool (not copied into the project) ------------------------
golden_replay() {
    local db=golden_replay shared_dir f listen_port mysql_cmd i log=target/golden-service.log
    # The binary `cargo test` just built (a release build would add minutes to
    # every CI run and answers the same bytes).
    local bin="${CARGO_TARGET_DIR:-target}/debug/shopchat"
    shared_dir="$(dirname "$shared_parity")"

    # The fixture copies must match the shared contract data they were copied from.
    for f in "spec/fixtures.sql:fixtures/fixtures.sql" "spec/schema.sql:schema/shop.sql" \
        "golden/cases.json:fixtures/golden/cases.json" "golden/expected.jsonl:fixtures/golden/expected.jsonl"; do
        if [[ -f "$shared_dir/../${f%%:*}" ]] && ! cmp -s "$shared_dir/../${f%%:*}" "${f#*:}"; then
            note "warning: ${f#*:} differs from ../shared/${f%%:*}; refresh the copy (fixtures/README.md)"
        fi
    done

    if ! command -v python3 >/dev/null 2>&1; then
        pmdb_apt_install python3 || true
        command -v python3 >/dev/null 2>&1 || fail "golden replay: python3 is required by parity.py (Debian package python3)"
    fi

    printf -- '--- cargo build --bin shopchat\n'
    cargo build --bin shopchat || fail "golden replay: cargo build failed"

    printf -- '--- database %s with the fixture\n' "$db"
    pmdb_parse_target "$SHOPCHAT_TEST_DATABASE_URL" || fail "golden replay: bad SHOPCHAT_TEST_DATABASE_URL"
    load_fixture "$SHOPCHAT_TEST_DATABASE_URL" "$db" || fail "golden replay: loading the fixture failed"
    local tz
    tz="$(pmdb_sql "$SHOPCHAT_TEST_DATABASE_URL" --batch --skip-column-names \
        -e "SELECT IF(@@global.time_zone = 'SYSTEM', @@system_time_zone, @@global.time_zone)")" || tz="?"
    case "$tz" in
    +00:00 | UTC | Etc/UTC | GMT | Z) ;;
    *) note "warning: the server's default time zone is '$tz', not UTC: the golden answers will differ (README of the golden set)" ;;
    esac

    listen_port="$(pmdb_free_port 18080)" || fail "golden replay: no free port for the service"
    mkdir -p target
    rm -rf target/golden-outbox target/golden-actual.jsonl
    printf -- '--- %s serve on 127.0.0.1:%s (log: %s)\n' "$bin" "$listen_port" "$log"
    env DB_HOST="$PMDB_DB_HOST" DB_PORT="$PMDB_DB_PORT" DB_DATABASE="$db" \
        DB_USERNAME="$PMDB_DB_USER" DB_PASSWORD="$PMDB_DB_PASS" \
        APP_KEY='base64:FxO+5zEy133M5/q/XUBpdtp/0srOK9tezZfkWCnyPFc=' APP_TIMEZONE=UTC \
        SYSTEM_KEY=fixture-system-key DEFAULT_LANGUAGE=en SHOPCHAT_LISTEN="127.0.0.1:$listen_port" \
        MAIL_MAILER=log SHOPCHAT_OUTBOX_DIR=target/golden-outbox \
        "$bin" serve </dev/null >"$log" 2>&1 &
    svc_pid=$!
    for i in $(seq 1 240); do
        pmdb_port_answers "$listen_port" && break
        if ! kill -0 "$svc_pid" 2>/dev/null; then
            wait "$svc_pid" 2>/dev/null || true
            svc_pid=""
            tail -n 40 "$log" >&2
            fail "golden replay: the service exited before listening (log above: $log)"
        fi
        if [[ "$i" -eq 240 ]]; then
            tail -n 40 "$log" >&2
            fail "golden replay: the service did not listen on 127.0.0.1:$listen_port within 60s"
        fi
        sleep 0.25
    done

    pmdb_ensure_client || fail "golden replay: no mariadb client for parity.py"
    mysql_cmd="$PMDB_CLIENT --no-defaults -u$PMDB_DB_USER -h$PMDB_DB_HOST -P$PMDB_DB_PORT"
    if [[ -n "$PMDB_DB_PASS" ]]; then
        export MYSQL_PWD="$PMDB_DB_PASS"
    fi
    printf -- '--- parity.py capture (PARITY_MYSQL="%s")\n' "$mysql_cmd"
    PARITY_MYSQL="$mysql_cmd" python3 "$shared_parity" capture \
        --base "http://127.0.0.1:$listen_port" --host shop.test \
        --cases fixtures/golden/cases.json --out target/golden-actual.jsonl --db "$db" ||
        fail "golden replay: parity.py capture failed (service log: $log)"
    stop_service

    printf -- '--- parity.py compare fixtures/golden/expected.jsonl target/golden-actual.jsonl\n'
    python3 "$shared_parity" compare fixtures/golden/expected.jsonl target/golden-actual.jsonl ||
        fail "golden replay: answers differ from fixtures/golden/expected.jsonl (recording: target/golden-actual.jsonl, service log: $log)"
}

if [[ "$run_golden" -eq 1 ]]; then
    header "golden replay with ../shared/golden/parity.py"
    golden_replay
    step_ok
fi

# --- summary ----------------------------------------------------------------------------------------
printf '\ntest.sh: all %d steps passed.\n' "$step_total"
for s in "${skipped[@]}"; do
    printf 'test.sh: skipped: %s\n' "$s"
done
