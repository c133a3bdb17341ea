# scripts/lib.sh — the start the scripts of scripts/ and bench/ share. Source it from the
# repository's root, with the script's name for its error messages:
#
#   set -euo pipefail
#   cd "$(dirname "$0")/.."
#   source scripts/lib.sh NAME
#
# It sets `root` (the repository), loads scripts/private-mariadb.sh (the private server and apt
# installs) and defines `say` (progress on stderr) and `die` (an error on stderr, exit 1).

root="$(pwd)"
# shellcheck source=scripts/private-mariadb.sh
source "$root/scripts/private-mariadb.sh"
script_name="${1:-script}"
say() { printf '==> %s\n' "$*" >&2; }
die() {
    printf '%s: error: %s\n' "$script_name" "$*" >&2
    exit 1
}
