#!/usr/bin/env bash
# demo.sh — run shopchat on an embedded default: a private MariaDB in target/demo-db with the fixture
# loaded into database shopchat_demo (fresh on every run), then the release binary in the foreground.
#
#   scripts/demo.sh                     # Ctrl-C stops the service; the database keeps running
#   scripts/private-mariadb.sh stop target/demo-db      # stops the database
#
# Every variable of the service's environment can be overridden from the environment, e.g.
#   SHOPCHAT_LISTEN=0.0.0.0:9000 scripts/demo.sh
# Setting DB_PORT points the demo at an existing server instead of the private one (DB_HOST,
# DB_USERNAME, DB_PASSWORD too); database DB_DATABASE (default shopchat_demo) is DROPPED and reloaded
# there.
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh demo

demo_db_dir="target/demo-db"

if [[ -z "${DB_PORT:-}" ]]; then
    say "private MariaDB in $demo_db_dir"
    url="$(pmdb_start "$demo_db_dir" | tail -n 1)" || die "could not start the private MariaDB (see $demo_db_dir/error.log)"
    DB_PORT="${url##*:}"
    DB_HOST="${DB_HOST:-127.0.0.1}"
    DB_USERNAME="${DB_USERNAME:-root}"
    DB_PASSWORD="${DB_PASSWORD:-}"
    db_is_private=1
else
    DB_HOST="${DB_HOST:-127.0.0.1}"
    DB_USERNAME="${DB_USERNAME:-root}"
    DB_PASSWORD="${DB_PASSWORD:-}"
    db_is_private=0
    say "using the server given by DB_HOST/DB_PORT: $DB_USERNAME@$DB_HOST:$DB_PORT"
fi
DB_DATABASE="${DB_DATABASE:-shopchat_demo}"

say "loading the fixture into $DB_DATABASE (fresh)"
# The client reads the password from MYSQL_PWD (kept out of the URL and the command line).
if [[ -n "$DB_PASSWORD" ]]; then
    export MYSQL_PWD="$DB_PASSWORD"
fi
load_fixture "mysql://$DB_USERNAME@$DB_HOST:$DB_PORT" "$DB_DATABASE" ||
    die "could not load the fixture into $DB_DATABASE"
unset MYSQL_PWD

say "cargo build --release --bin shopchat"
cargo build --release --bin shopchat || die "cargo build failed"

export DB_HOST DB_PORT DB_DATABASE DB_USERNAME DB_PASSWORD
export APP_KEY="${APP_KEY:-base64:FxO+5zEy133M5/q/XUBpdtp/0srOK9tezZfkWCnyPFc=}"
export APP_TIMEZONE="${APP_TIMEZONE:-UTC}"
export SYSTEM_KEY="${SYSTEM_KEY:-fixture-system-key}"
export DEFAULT_LANGUAGE="${DEFAULT_LANGUAGE:-en}"
export MAIL_MAILER="${MAIL_MAILER:-log}"
export SHOPCHAT_OUTBOX_DIR="${SHOPCHAT_OUTBOX_DIR:-target/demo-outbox}"
export SHOPCHAT_LISTEN="${SHOPCHAT_LISTEN:-127.0.0.1:8000}"

# Where curl should go: a wildcard listen address is reached through loopback.
listen_host="${SHOPCHAT_LISTEN%:*}"
listen_port="${SHOPCHAT_LISTEN##*:}"
case "$listen_host" in
'' | 0.0.0.0 | '[::]' | '::') listen_host=127.0.0.1 ;;
esac
base="http://$listen_host:$listen_port/api/v2/chat"
token='5|e82dec50eb35333b411bdc59de6c1b222cbf49b6'
hdrs="-H 'Accept: application/json' -H 'System-Key: $SYSTEM_KEY' -H 'Authorization: Bearer $token'"

cat >&2 <<EOF

shopchat demo: database $DB_DATABASE on $DB_HOST:$DB_PORT, listening on $SHOPCHAT_LISTEN
Token of customer 1 (user 5): $token (other tokens: fixtures/README.md)

# list the conversations of customer 1
curl -s $hdrs '$base/conversations'
# read the messages of conversation 1 (newest page first)
curl -s $hdrs '$base/messages/1'
# poll for messages of conversation 1 newer than message 30
curl -s $hdrs '$base/get-new-messages/1/30'
# post a message into conversation 1 (form body)
curl -s $hdrs --data-urlencode 'conversation_id=1' --data-urlencode 'user_id=5' --data-urlencode 'message=Hello from the demo' '$base/insert-message'
# start a conversation about product 3 (JSON body)
curl -s $hdrs -H 'Content-Type: application/json' -d '{"product_id":3,"title":"Mechanical Gaming Keyboard","message":"Is it in stock?"}' '$base/create-conversation'

Ctrl-C stops the service.
EOF
if [[ "$db_is_private" -eq 1 ]]; then
    printf 'The database keeps running; stop it with: scripts/private-mariadb.sh stop %s\n\n' "$demo_db_dir" >&2
fi

exec "${CARGO_TARGET_DIR:-target}/release/shopchat" serve
