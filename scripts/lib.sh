# Shared shell helpers for Ferry's scripts (sourced, not run).

# Installs Debian package $1 (as root, or through sudo), saying why ($2).
apt_install() {
  echo "ferry: installing $2 (Debian package $1)" >&2
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$1" >/dev/null
}

# Installs the PostgreSQL server binaries (Debian's package) when no initdb is found.
ensure_postgres() {
  if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1; then
    return 0
  fi
  apt_install postgresql "the PostgreSQL server"
}

# tmux, for the terminal test (tests/tests/terminal.rs reads a real terminal's screen through it).
ensure_tmux() {
  command -v tmux >/dev/null 2>&1 || apt_install tmux tmux
}

# Installs Chromium (Debian's package) when missing: the browser the HTML report test renders in.
ensure_chromium() {
  command -v chromium >/dev/null 2>&1 || apt_install chromium chromium
}

# The newest PostgreSQL bin folder.
pg_bin_dir() {
  if [ -n "${FERRY_PG_BIN:-}" ]; then echo "$FERRY_PG_BIN"; return; fi
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  if [ -n "$dir" ]; then echo "$dir"; else dirname "$(command -v initdb)"; fi
}
