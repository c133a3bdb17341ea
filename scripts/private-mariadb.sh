#!/usr/bin/env bash
# private-mariadb.sh — run a private, throw-away MariaDB server in a directory the caller owns.
#
# CLI:
#   scripts/private-mariadb.sh start  DIR [PORT]   init DIR (once) and start the server (reuses a running one);
#                                                  the last line on stdout is mysql://root@127.0.0.1:PORT
#   scripts/private-mariadb.sh stop   DIR          clean shutdown; waits until the process has exited
#   scripts/private-mariadb.sh status DIR          "running ..." (exit 0) or "not running" (exit 1)
#   scripts/private-mariadb.sh load   URL|PORT DB  (re)create database DB (utf8mb4_unicode_ci) and load
#                                                  schema/shop.sql then fixtures/fixtures.sql
#   scripts/private-mariadb.sh client DIR [ARGS]   run the mariadb client against the server in DIR
#   scripts/private-mariadb.sh tls    DIR          make a test CA and a server certificate in DIR/tls/ (once);
#                                                  the next start of DIR serves TLS with them; the last line on
#                                                  stdout is the CA file. DIR/tls/other-ca.pem signed nothing.
#
# Library (source it; it sets no shell options and defines only functions and PMDB_* variables):
#   pmdb_start DIR [PORT]   pmdb_stop DIR   pmdb_status DIR   pmdb_is_running DIR   pmdb_port DIR
#   load_fixture URL|PORT DBNAME   pmdb_free_port [FIRST]   pmdb_ensure_server   pmdb_ensure_client
#   pmdb_apt_install PKG...
# Functions return non-zero (with a message on stderr) instead of exiting.
#
# Layout of DIR: data/ (datadir), mysqld.sock, mysqld.pid, error.log, install.log, port (port of the
# last start; use `status` to know whether the server is running), tls/ (optional: certificates; when
# tls/server-cert.pem exists the server is started with TLS).
#
# The server: root@localhost and root@127.0.0.1 without password, no test database, UTC default time
# zone, utf8mb4/utf8mb4_unicode_ci, bound to 127.0.0.1 only, small InnoDB settings. It ignores every
# my.cnf (--no-defaults), so it never touches the system's server or its files.
#
# If mariadbd / mariadb-install-db / the client are missing they are installed from Debian's packages
# (apt-get; as root, or with password-less sudo) without starting the package's own service.

PMDB_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PMDB_SCHEMA="${PMDB_SCHEMA:-$PMDB_ROOT/schema/shop.sql}"
PMDB_FIXTURE="${PMDB_FIXTURE:-$PMDB_ROOT/fixtures/fixtures.sql}"
PMDB_START_TIMEOUT="${PMDB_START_TIMEOUT:-60}"
PMDB_STOP_TIMEOUT="${PMDB_STOP_TIMEOUT:-60}"
PMDB_FIRST_PORT=33060

pmdb_log() { printf 'private-mariadb: %s\n' "$*" >&2; }
pmdb_err() { printf 'private-mariadb: error: %s\n' "$*" >&2; }

# Prints the path of the first of the given commands found in PATH or the usual sbin/bin dirs.
pmdb_find_cmd() {
    local name dir
    for name in "$@"; do
        if command -v "$name" >/dev/null 2>&1; then
            command -v "$name"
            return 0
        fi
        for dir in /usr/sbin /usr/bin /usr/local/sbin /usr/local/bin /sbin; do
            if [[ -x "$dir/$name" ]]; then
                printf '%s\n' "$dir/$name"
                return 0
            fi
        done
    done
    return 1
}

# Sets PMDB_MARIADBD, PMDB_INSTALL_DB, PMDB_CLIENT, PMDB_ADMIN (empty when missing).
pmdb_locate() {
    PMDB_MARIADBD="$(pmdb_find_cmd mariadbd mysqld || true)"
    PMDB_INSTALL_DB="$(pmdb_find_cmd mariadb-install-db mysql_install_db || true)"
    PMDB_CLIENT="$(pmdb_find_cmd mariadb mysql || true)"
    PMDB_ADMIN="$(pmdb_find_cmd mariadb-admin mysqladmin || true)"
}

# apt-get install PKG... without starting any service the packages ship.
pmdb_apt_install() {
    local -a sudo=()
    if [[ "$(id -u)" -ne 0 ]]; then
        if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
            sudo=(sudo -n)
        else
            pmdb_err "need root (or password-less sudo) to install: $*"
            return 1
        fi
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        pmdb_err "apt-get is not available; install these packages by hand: $*"
        return 1
    fi
    # policy-rc.d answering 101 ("action forbidden") stops invoke-rc.d / deb-systemd-invoke from
    # starting the package's service in the postinst. Only installed when none exists already.
    local policy=/usr/sbin/policy-rc.d placed_policy=0 rc=0
    if [[ ! -e "$policy" ]]; then
        if printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null &&
            "${sudo[@]}" chmod 755 "$policy"; then
            placed_policy=1
        fi
    fi
    pmdb_log "installing from Debian's packages: $* (apt-get update + install)"
    {
        "${sudo[@]}" apt-get update &&
            "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
                apt-get install -y --no-install-recommends "$@"
    } >&2 || rc=$?
    if [[ "$placed_policy" -eq 1 ]]; then
        "${sudo[@]}" rm -f "$policy"
    fi
    if [[ "$rc" -ne 0 ]]; then
        # A postinst that failed (e.g. it could not start a service) still leaves the binaries
        # unpacked; the caller checks for them.
        pmdb_log "warning: apt-get exited with $rc; checking whether the binaries are usable anyway"
    fi
    return 0
}

# Makes sure mariadbd, the install-db script and the clients exist (installs mariadb-server if not).
pmdb_ensure_server() {
    pmdb_locate
    if [[ -n "$PMDB_MARIADBD" && -n "$PMDB_INSTALL_DB" && -n "$PMDB_CLIENT" && -n "$PMDB_ADMIN" ]]; then
        return 0
    fi
    pmdb_log "MariaDB server binaries missing:$(pmdb_missing_list)"
    pmdb_apt_install mariadb-server mariadb-client || true
    pmdb_locate
    if [[ -z "$PMDB_MARIADBD" || -z "$PMDB_INSTALL_DB" || -z "$PMDB_CLIENT" || -z "$PMDB_ADMIN" ]]; then
        pmdb_err "still missing:$(pmdb_missing_list) (Debian packages: mariadb-server, mariadb-client)"
        return 1
    fi
}

# Makes sure the mariadb client exists (installs mariadb-client if not).
pmdb_ensure_client() {
    pmdb_locate
    [[ -n "$PMDB_CLIENT" ]] && return 0
    pmdb_log "the mariadb client is missing"
    pmdb_apt_install mariadb-client || true
    pmdb_locate
    if [[ -z "$PMDB_CLIENT" ]]; then
        pmdb_err "still missing: mariadb (or mysql) client (Debian package: mariadb-client)"
        return 1
    fi
}

pmdb_missing_list() {
    [[ -n "$PMDB_MARIADBD" ]] || printf ' mariadbd (or mysqld)'
    [[ -n "$PMDB_INSTALL_DB" ]] || printf ' mariadb-install-db (or mysql_install_db)'
    [[ -n "$PMDB_CLIENT" ]] || printf ' mariadb (or mysql)'
    [[ -n "$PMDB_ADMIN" ]] || printf ' mariadb-admin (or mysqladmin)'
}

# True if something accepts TCP connections on 127.0.0.1:PORT.
pmdb_port_answers() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# True if PORT looks free (nothing listens on it, on any address).
pmdb_port_free() {
    local port="$1"
    if pmdb_port_answers "$port"; then
        return 1
    fi
    if command -v ss >/dev/null 2>&1 && [[ -n "$(ss -Hltn "sport = :$port" 2>/dev/null)" ]]; then
        return 1
    fi
    return 0
}

# Prints the first free port >= FIRST (default 33060).
pmdb_free_port() {
    local port="${1:-$PMDB_FIRST_PORT}" last
    last=$((port + 2000))
    while ((port <= last && port <= 65535)); do
        if pmdb_port_free "$port"; then
            printf '%s\n' "$port"
            return 0
        fi
        port=$((port + 1))
    done
    pmdb_err "no free TCP port found in ${1:-$PMDB_FIRST_PORT}..$last"
    return 1
}

# Absolute path of DIR (created if needed).
pmdb_abs_dir() {
    mkdir -p "$1" && (cd "$1" && pwd -P)
}

# Absolute path of an existing DIR (fails quietly if it does not exist).
pmdb_existing_dir() {
    [[ -d "$1" ]] && (cd "$1" && pwd -P)
}

# Unix socket paths are limited to 107 bytes; use a short path under /tmp when DIR is too deep.
pmdb_socket_path() {
    local dir="$1" sock
    sock="$dir/mysqld.sock"
    if ((${#sock} > 100)); then
        sock="/tmp/pmdb-$(printf '%s' "$dir" | cksum | cut -d' ' -f1).sock"
    fi
    printf '%s\n' "$sock"
}

# Prints the pid of the server running in DIR, or fails.
pmdb_pid() {
    local dir pid
    dir="$(pmdb_existing_dir "$1")" || return 1
    [[ -s "$dir/mysqld.pid" ]] || return 1
    pid="$(tr -dc '0-9' <"$dir/mysqld.pid")"
    [[ -n "$pid" ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    # Guard against a recycled pid: the process must be a server on this datadir.
    if [[ -r "/proc/$pid/cmdline" ]] &&
        ! tr '\0' '\n' <"/proc/$pid/cmdline" | grep -qxF -- "--datadir=$dir/data"; then
        return 1
    fi
    printf '%s\n' "$pid"
}

pmdb_is_running() {
    pmdb_pid "$1" >/dev/null
}

# Prints the port of the last start in DIR.
pmdb_port() {
    local dir
    dir="$(pmdb_existing_dir "$1")" || dir="$1"
    [[ -s "$dir/port" ]] || {
        pmdb_err "no port file in $dir (server never started there)"
        return 1
    }
    tr -dc '0-9' <"$dir/port"
    printf '\n'
}

# pmdb_ping PORT [DIR]: true when root can run a query over TCP on PORT and, with DIR, when the
# server answering there is the one whose datadir is DIR/data (not someone else's on that port).
pmdb_ping() {
    local out
    out="$("$PMDB_CLIENT" --no-defaults -uroot -h127.0.0.1 -P"$1" --connect-timeout=2 \
        --batch --skip-column-names -e 'select @@datadir' 2>/dev/null)" || return 1
    [[ -z "${2:-}" || "${out%/}" == "$2/data" ]]
}

pmdb_init_datadir() {
    local dir="$1"
    if [[ -f "$dir/.initialised" && -d "$dir/data/mysql" ]]; then
        return 0
    fi
    if [[ -e "$dir/data" ]]; then
        pmdb_log "removing the incomplete datadir $dir/data (an earlier initialisation did not finish)"
        rm -rf "$dir/data"
    fi
    local -a user=() tls=()
    [[ "$(id -u)" -eq 0 ]] && user=(--user=root)
    if [[ -f "$dir/tls/server-cert.pem" ]]; then
        tls=(--ssl-ca="$dir/tls/ca.pem" --ssl-cert="$dir/tls/server-cert.pem" --ssl-key="$dir/tls/server-key.pem")
    fi
    pmdb_log "initialising $dir/data ($PMDB_INSTALL_DB)"
    if ! "$PMDB_INSTALL_DB" --no-defaults "${user[@]}" --datadir="$dir/data" \
        --auth-root-authentication-method=normal --skip-test-db --skip-name-resolve --force \
        --innodb-buffer-pool-size=64M --innodb-log-file-size=16M \
        >"$dir/install.log" 2>&1; then
        pmdb_err "$PMDB_INSTALL_DB failed; last lines of $dir/install.log:"
        tail -n 30 "$dir/install.log" >&2
        return 1
    fi
    touch "$dir/.initialised"
}

# Starts mariadbd on PORT and waits until it answers. Returns 2 if the port was taken.
pmdb_launch() {
    local dir="$1" port="$2" sock pid="" waited=0 log_offset
    sock="$(pmdb_socket_path "$dir")"
    local -a user=() tls=()
    [[ "$(id -u)" -eq 0 ]] && user=(--user=root)
    if [[ -f "$dir/tls/server-cert.pem" ]]; then
        tls=(--ssl-ca="$dir/tls/ca.pem" --ssl-cert="$dir/tls/server-cert.pem" --ssl-key="$dir/tls/server-key.pem")
    fi
    rm -f "$dir/mysqld.pid"
    touch "$dir/error.log"
    log_offset="$(wc -c <"$dir/error.log")"
    pmdb_log "starting $PMDB_MARIADBD on 127.0.0.1:$port (datadir $dir/data, log $dir/error.log)"
    # setsid: the server must survive the caller and its Ctrl-C (own session); --wait keeps $!
    # alive exactly as long as mariadbd when setsid has to fork. Output goes to the log only.
    local -a setsid_cmd=()
    command -v setsid >/dev/null 2>&1 && setsid_cmd=(setsid --wait)
    "${setsid_cmd[@]}" "$PMDB_MARIADBD" --no-defaults "${user[@]}" \
        --datadir="$dir/data" \
        --socket="$sock" \
        --port="$port" \
        --bind-address=127.0.0.1 \
        --pid-file="$dir/mysqld.pid" \
        --log-error="$dir/error.log" \
        --default-time-zone=+00:00 \
        --character-set-server=utf8mb4 \
        --collation-server=utf8mb4_unicode_ci \
        --skip-name-resolve \
        --innodb-buffer-pool-size=64M \
        --innodb-log-file-size=16M \
        --innodb-flush-log-at-trx-commit=2 \
        --max-connections=500 \
        "${tls[@]}" \
        </dev/null >>"$dir/error.log" 2>&1 &
    pid=$!
    while ! pmdb_ping "$port" "$dir"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            wait "$pid" 2>/dev/null || true
            if tail -c +"$((log_offset + 1))" "$dir/error.log" |
                grep -qiE 'address already in use|another server running on port|bind on tcp/ip port'; then
                pmdb_log "port $port is taken"
                return 2
            fi
            pmdb_err "mariadbd exited during startup; last lines of $dir/error.log:"
            tail -n 40 "$dir/error.log" >&2
            return 1
        fi
        if ((waited >= PMDB_START_TIMEOUT * 2)); then
            pmdb_err "mariadbd did not answer on 127.0.0.1:$port within ${PMDB_START_TIMEOUT}s; last lines of $dir/error.log:"
            tail -n 40 "$dir/error.log" >&2
            local server_pid
            server_pid="$(tr -dc '0-9' <"$dir/mysqld.pid" 2>/dev/null || true)"
            kill -KILL ${server_pid:+"$server_pid"} "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
            return 1
        fi
        sleep 0.5
        waited=$((waited + 1))
    done
    # The caller's shell need not wait for the server.
    disown "$pid" 2>/dev/null || true
    printf '%s\n' "$port" >"$dir/port"
    printf '%s\n' "$sock" >"$dir/socket"
    return 0
}

# pmdb_tls DIR: a throw-away CA and a server certificate for localhost / 127.0.0.1 in DIR/tls/, made
# with openssl (installed when missing); prints the CA file's path. A second CA (other-ca.pem) signed
# nothing: tests use it as a wrong CA.
pmdb_tls() {
    local dir tls
    dir="$(pmdb_abs_dir "${1:?usage: pmdb_tls DIR}")" || return 1
    tls="$dir/tls"
    if [[ -f "$tls/server-cert.pem" && -f "$tls/other-ca.pem" ]]; then
        printf '%s\n' "$tls/ca.pem"
        return 0
    fi
    command -v openssl >/dev/null 2>&1 || pmdb_apt_install openssl || {
        pmdb_err "openssl is required to make the test certificates (Debian package openssl)"
        return 1
    }
    mkdir -p "$tls" || return 1
    (
        cd "$tls" || exit 1
        openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=shopchat test CA" \
            -keyout ca-key.pem -out ca.pem &&
            openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
                -keyout server-key.pem -out server.csr &&
            printf '%s\n' "subjectAltName=DNS:localhost,IP:127.0.0.1" "basicConstraints=CA:FALSE" \
                "keyUsage=digitalSignature,keyEncipherment" "extendedKeyUsage=serverAuth" >server.ext &&
            openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial \
                -days 3650 -extfile server.ext -out server-cert.pem &&
            openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=another CA" \
                -keyout other-ca-key.pem -out other-ca.pem
    ) >"$dir/tls.log" 2>&1 || {
        pmdb_err "making the test certificates failed; see $dir/tls.log"
        return 1
    }
    printf '%s\n' "$tls/ca.pem"
}

# pmdb_start DIR [PORT]: prints mysql://root@127.0.0.1:PORT as the last line on stdout.
pmdb_start() {
    local dir port="${2:-}" rc attempt
    if [[ -z "${1:-}" ]]; then
        pmdb_err "usage: pmdb_start DIR [PORT]"
        return 1
    fi
    if [[ -n "$port" && ! "$port" =~ ^[0-9]+$ ]]; then
        pmdb_err "PORT must be a number, got '$port'"
        return 1
    fi
    dir="$(pmdb_abs_dir "$1")" || {
        pmdb_err "cannot create $1"
        return 1
    }
    pmdb_ensure_server || return 1

    if pmdb_is_running "$dir"; then
        local running_port
        running_port="$(pmdb_port "$dir")" || return 1
        if [[ -n "$port" && "$port" != "$running_port" ]]; then
            pmdb_err "a server already runs in $dir on port $running_port (asked for $port); stop it first"
            return 1
        fi
        if ! pmdb_ping "$running_port" "$dir"; then
            pmdb_err "the server in $dir (pid $(pmdb_pid "$dir")) does not answer on port $running_port"
            return 1
        fi
        pmdb_log "reusing the server already running in $dir (pid $(pmdb_pid "$dir"))"
        printf 'mysql://root@127.0.0.1:%s\n' "$running_port"
        return 0
    fi

    pmdb_init_datadir "$dir" || return 1

    if [[ -n "$port" ]]; then
        if ! pmdb_port_free "$port"; then
            pmdb_err "port $port is already in use"
            return 1
        fi
        pmdb_launch "$dir" "$port" || {
            rc=$?
            [[ "$rc" -eq 2 ]] && pmdb_err "port $port is already in use"
            return 1
        }
    else
        # Prefer the port of the last start (stable URLs), else the first free one >= 33060.
        # Retry when another process grabbed the port between the check and the bind.
        local prev=""
        [[ -s "$dir/port" ]] && prev="$(tr -dc '0-9' <"$dir/port")"
        for attempt in 1 2 3 4 5; do
            if [[ -n "$prev" && "$attempt" -eq 1 ]] && pmdb_port_free "$prev"; then
                port="$prev"
            else
                port="$(pmdb_free_port "$((PMDB_FIRST_PORT + (attempt - 1) * 7))")" || return 1
            fi
            rc=0
            pmdb_launch "$dir" "$port" || rc=$?
            [[ "$rc" -eq 0 ]] && break
            [[ "$rc" -eq 2 && "$attempt" -lt 5 ]] || return 1
        done
    fi
    pmdb_log "ready: mysql://root@127.0.0.1:$port (pid $(pmdb_pid "$dir" || echo '?'))"
    printf 'mysql://root@127.0.0.1:%s\n' "$port"
}

# pmdb_stop DIR: clean shutdown, then waits for the process to exit (kills it as a last resort).
pmdb_stop() {
    local dir pid port sock waited=0
    if [[ -z "${1:-}" ]]; then
        pmdb_err "usage: pmdb_stop DIR"
        return 1
    fi
    if [[ ! -d "$1" ]]; then
        pmdb_log "$1 does not exist; nothing to stop"
        return 0
    fi
    dir="$(pmdb_abs_dir "$1")" || return 1
    if ! pid="$(pmdb_pid "$dir")"; then
        pmdb_log "no server running in $dir"
        return 0
    fi
    pmdb_locate
    port="$(pmdb_port "$dir" 2>/dev/null || true)"
    sock="$(cat "$dir/socket" 2>/dev/null || pmdb_socket_path "$dir")"
    pmdb_log "stopping the server in $dir (pid $pid)"
    if [[ -n "$PMDB_ADMIN" ]]; then
        if ! "$PMDB_ADMIN" --no-defaults -uroot --socket="$sock" --connect-timeout=5 shutdown \
            >/dev/null 2>&1; then
            if [[ -z "$port" ]] ||
                ! "$PMDB_ADMIN" --no-defaults -uroot -h127.0.0.1 -P"$port" --connect-timeout=5 \
                    shutdown >/dev/null 2>&1; then
                pmdb_log "mariadb-admin shutdown failed; sending SIGTERM to $pid"
                kill -TERM "$pid" 2>/dev/null || true
            fi
        fi
    else
        kill -TERM "$pid" 2>/dev/null || true
    fi
    while kill -0 "$pid" 2>/dev/null; do
        if ((waited == PMDB_STOP_TIMEOUT * 2)); then
            pmdb_log "still running after ${PMDB_STOP_TIMEOUT}s; sending SIGTERM to $pid"
            kill -TERM "$pid" 2>/dev/null || true
        elif ((waited >= PMDB_STOP_TIMEOUT * 2 + 20)); then
            pmdb_log "still running; sending SIGKILL to $pid"
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.5
            break
        fi
        sleep 0.5
        waited=$((waited + 1))
    done
    if kill -0 "$pid" 2>/dev/null; then
        pmdb_err "could not stop pid $pid"
        return 1
    fi
    rm -f "$dir/mysqld.pid"
    pmdb_log "stopped"
}

pmdb_status() {
    local dir pid
    dir="$(pmdb_existing_dir "$1")" || dir="$1"
    if pid="$(pmdb_pid "$dir")"; then
        printf 'running (pid %s): mysql://root@127.0.0.1:%s\n' "$pid" "$(pmdb_port "$dir")"
        return 0
    fi
    printf 'not running (%s)\n' "$dir"
    return 1
}

# Splits URL|PORT into PMDB_DB_USER, PMDB_DB_PASS, PMDB_DB_HOST, PMDB_DB_PORT.
# Accepts 33061, mysql://root@127.0.0.1:33061, mysql://user:pass@host:port/anything (no %-escapes).
pmdb_parse_target() {
    local target="$1" rest userinfo hostport
    PMDB_DB_USER=root PMDB_DB_PASS="" PMDB_DB_HOST=127.0.0.1 PMDB_DB_PORT=3306
    if [[ "$target" =~ ^[0-9]+$ ]]; then
        PMDB_DB_PORT="$target"
        return 0
    fi
    if [[ ! "$target" =~ ^(mysql|mariadb):// ]]; then
        pmdb_err "expected a port or mysql://user[:password]@host[:port], got '$target'"
        return 1
    fi
    rest="${target#*://}"
    rest="${rest%%/*}"
    rest="${rest%%\?*}"
    if [[ "$rest" == *@* ]]; then
        userinfo="${rest%@*}"
        hostport="${rest##*@}"
        PMDB_DB_USER="${userinfo%%:*}"
        [[ "$userinfo" == *:* ]] && PMDB_DB_PASS="${userinfo#*:}"
    else
        hostport="$rest"
    fi
    PMDB_DB_HOST="${hostport%%:*}"
    [[ "$hostport" == *:* ]] && PMDB_DB_PORT="${hostport##*:}"
    [[ -n "$PMDB_DB_HOST" ]] || PMDB_DB_HOST=127.0.0.1
    [[ "$PMDB_DB_HOST" == localhost ]] && PMDB_DB_HOST=127.0.0.1
    return 0
}

# Runs the client against URL|PORT with the remaining arguments.
pmdb_sql() {
    local target="$1"
    shift
    pmdb_parse_target "$target" || return 1
    pmdb_ensure_client || return 1
    if [[ -n "$PMDB_DB_PASS" ]]; then
        MYSQL_PWD="$PMDB_DB_PASS" "$PMDB_CLIENT" --no-defaults -u"$PMDB_DB_USER" \
            -h"$PMDB_DB_HOST" -P"$PMDB_DB_PORT" --default-character-set=utf8mb4 "$@"
    else
        "$PMDB_CLIENT" --no-defaults -u"$PMDB_DB_USER" -h"$PMDB_DB_HOST" -P"$PMDB_DB_PORT" \
            --default-character-set=utf8mb4 "$@"
    fi
}

# load_fixture URL|PORT DBNAME: drops and recreates DBNAME, then loads schema/shop.sql and
# fixtures/fixtures.sql.
load_fixture() {
    local target="${1:-}" db="${2:-}" f
    if [[ -z "$target" || -z "$db" ]]; then
        pmdb_err "usage: load_fixture URL|PORT DBNAME"
        return 1
    fi
    if [[ ! "$db" =~ ^[A-Za-z0-9_]+$ ]]; then
        pmdb_err "database name must match [A-Za-z0-9_]+, got '$db'"
        return 1
    fi
    for f in "$PMDB_SCHEMA" "$PMDB_FIXTURE"; do
        [[ -r "$f" ]] || {
            pmdb_err "missing $f"
            return 1
        }
    done
    pmdb_log "loading the fixture into database $db ($target)"
    pmdb_sql "$target" -e "DROP DATABASE IF EXISTS \`$db\`; CREATE DATABASE \`$db\` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci" ||
        {
            pmdb_err "could not create database $db"
            return 1
        }
    for f in "$PMDB_SCHEMA" "$PMDB_FIXTURE"; do
        pmdb_sql "$target" "$db" <"$f" || {
            pmdb_err "loading $f into $db failed"
            return 1
        }
    done
}

pmdb_usage() {
    cat >&2 <<'EOF'
usage: scripts/private-mariadb.sh start  DIR [PORT]
       scripts/private-mariadb.sh stop   DIR
       scripts/private-mariadb.sh status DIR
       scripts/private-mariadb.sh load   URL|PORT DBNAME
       scripts/private-mariadb.sh client DIR [mariadb client arguments...]
       scripts/private-mariadb.sh tls    DIR
EOF
}

pmdb_main() {
    local cmd="${1:-}"
    shift || true
    case "$cmd" in
    start)
        [[ $# -ge 1 && $# -le 2 ]] || {
            pmdb_usage
            return 2
        }
        pmdb_start "$@"
        ;;
    stop)
        [[ $# -eq 1 ]] || {
            pmdb_usage
            return 2
        }
        pmdb_stop "$1"
        ;;
    status)
        [[ $# -eq 1 ]] || {
            pmdb_usage
            return 2
        }
        pmdb_status "$1"
        ;;
    load)
        [[ $# -eq 2 ]] || {
            pmdb_usage
            return 2
        }
        load_fixture "$1" "$2"
        ;;
    client)
        [[ $# -ge 1 ]] || {
            pmdb_usage
            return 2
        }
        local dir="$1" port
        shift
        pmdb_is_running "$dir" || {
            pmdb_err "no server running in $dir"
            return 1
        }
        port="$(pmdb_port "$dir")" || return 1
        pmdb_sql "$port" "$@"
        ;;
    tls)
        [[ $# -eq 1 ]] || {
            pmdb_usage
            return 2
        }
        pmdb_tls "$1"
        ;;
    -h | --help | help)
        pmdb_usage
        ;;
    *)
        pmdb_usage
        return 2
        ;;
    esac
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    set -euo pipefail
    pmdb_main "$@"
fi
