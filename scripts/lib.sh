# shellcheck shell=bash
# Shared helpers of scripts/run and scripts/test; source it, do not run it.
#
#   parley_install_deps            apt-get what scripts/packages.txt lists and is missing
#   parley_build [type [dir [target...]]]  configure DIR [build/] (Ninja) once, then build it
#   parley_pg_start DIR PORT       private PostgreSQL: data in DIR/data, socket in DIR
#   parley_pg_stop DIR             stop it by the PID in DIR/data/postmaster.pid
#   parley_redis_start DIR PORT    private Redis, PID file DIR/redis.pid
#   parley_redis_stop DIR          stop it by that PID
#   parley_cluster_certs DIR NAME...  a cluster CA and one certificate per NAME (mutual TLS)
#
# Servers bind 127.0.0.1 only and are stopped by PID, never by name: other
# people's servers may run on the same machine. Works under `set -euo pipefail`.

PARLEY_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PARLEY_PG_PID=""    # set by parley_pg_start
PARLEY_REDIS_PID="" # set by parley_redis_start

parley_say() { printf '==> %s\n' "$*" >&2; }
parley_warn() { printf 'warning: %s\n' "$*" >&2; }
parley_die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

_parley_is_root() { [[ $(id -u) -eq 0 ]]; }

# ---------------------------------------------------------------------------
# Dependencies

# The package names of scripts/packages.txt, one per line.
parley_packages() {
  sed -e 's/#.*//' -e 's/[[:space:]]//g' -e '/^$/d' "$PARLEY_ROOT/scripts/packages.txt"
}

# Installs whatever of scripts/packages.txt is missing; fast (dpkg-query only)
# when everything is installed, and needs neither root nor network then.
parley_install_deps() {
  local p missing=()
  if ! command -v dpkg-query >/dev/null 2>&1; then
    parley_warn "dpkg-query not found (not Debian?): assuming scripts/packages.txt is installed"
    return 0
  fi
  while IFS= read -r p; do
    dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null | grep -q '^ii' && continue
    # Node.js from another source (for example a nodejs package that bundles
    # npm) serves as well; installing Debian's npm over it would conflict.
    if [[ $p == npm || $p == nodejs ]] && command -v "${p/nodejs/node}" >/dev/null 2>&1; then
      continue
    fi
    missing+=("$p")
  done < <(parley_packages)
  if ((${#missing[@]} == 0)); then
    parley_say "dependencies: all $(parley_packages | wc -l) packages installed"
    return 0
  fi
  parley_say "installing ${#missing[@]} missing packages: ${missing[*]}"
  local -a sudo=()
  if ! _parley_is_root; then
    command -v sudo >/dev/null 2>&1 ||
      parley_die "not root and no sudo: install these packages first: ${missing[*]}"
    sudo=(sudo)
  fi
  # DPkg::Lock::Timeout waits for a concurrent apt instead of failing at once.
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q ||
    parley_die "apt-get update failed"
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
    --no-install-recommends -o DPkg::Lock::Timeout=300 "${missing[@]}" ||
    parley_die "apt-get install failed"
}

# ---------------------------------------------------------------------------
# Build

# parley_build [type [dir [target...]]]: configures DIR [build/] with Ninja
# unless it is already configured (an explicit build type that differs from
# the configured one re-runs the configure step), then builds the TARGETs
# [all] with PARLEY_BUILD_JOBS [2] jobs. With no type, a fresh DIR is
# configured as Release. A compiler launcher such as ccache is taken from
# CMAKE_CXX_COMPILER_LAUNCHER in the environment when DIR is first configured.
parley_build() {
  local type=${1:-} dir=${2:-$PARLEY_ROOT/build} have=""
  local -a targets=("${@:3}")
  local name=${dir#"$PARLEY_ROOT"/}
  if [[ -f $dir/CMakeCache.txt ]]; then
    have=$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$dir/CMakeCache.txt")
    if [[ -n $type && $type != "$have" ]]; then
      parley_say "reconfiguring $name/ as $type (was ${have:-unset})"
      cmake -S "$PARLEY_ROOT" -B "$dir" -DCMAKE_BUILD_TYPE="$type" >/dev/null
    fi
  else
    type=${type:-Release}
    parley_say "configuring $name/ ($type, Ninja)"
    cmake -S "$PARLEY_ROOT" -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE="$type" >/dev/null
  fi
  parley_say "building ${targets[*]:-everything} (${type:-$have}, ${PARLEY_BUILD_JOBS:-2} jobs)"
  cmake --build "$dir" -j"${PARLEY_BUILD_JOBS:-2}" ${targets[@]+--target "${targets[@]}"}
}

# ---------------------------------------------------------------------------
# Cluster certificates (mutual TLS on the cluster port, PARLEY_CLUSTER_TLS_*)

# parley_cluster_certs [--readable-keys] DIR NAME...: a CA dedicated to one
# cluster (DIR/ca.pem, its key DIR/ca.key) unless DIR already holds one, and
# for each NAME missing one a certificate DIR/NAME.pem with its unencrypted
# key DIR/NAME.key, signed by that CA, valid 825 days, usable as TLS server
# and client. ECDSA P-256, made with the openssl CLI. DIR is made 0700 and
# keys 0600; --readable-keys makes the node keys 0644, for bind mounts into
# containers that run as another user (DIR stays 0700). Peers check only
# that a certificate chains to the CA (no host names), so anyone holding a
# key of DIR is a member: keep DIR/ca.key offline once the certificates exist.
parley_cluster_certs() {
  local key_mode=600
  if [[ ${1:-} == --readable-keys ]]; then
    key_mode=644
    shift
  fi
  (($# >= 2)) || parley_die "usage: parley_cluster_certs [--readable-keys] DIR NAME..."
  local dir=$1 name
  shift
  command -v openssl >/dev/null 2>&1 || parley_die "the openssl command is needed to make certificates"
  for name in "$@"; do
    [[ $name =~ ^[A-Za-z0-9][A-Za-z0-9._-]*$ && $name != ca ]] ||
      parley_die "certificate name '$name': letters, digits, '.', '_' and '-' only, and not 'ca'"
  done
  (umask 077 && mkdir -p "$dir") && chmod 700 "$dir" || parley_die "cannot create $dir"
  local curve=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1)
  local ext="basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth,clientAuth"
  if [[ ! -s $dir/ca.pem || ! -s $dir/ca.key ]]; then
    parley_say "making a cluster CA in $dir (ca.pem; its key ca.key signs members)"
    (umask 077 && openssl req -x509 "${curve[@]}" -nodes -days 825 \
      -subj "/CN=Parley cluster CA $(date -u +%Y%m%dT%H%M%SZ)" \
      -keyout "$dir/ca.key" -out "$dir/ca.pem" >/dev/null 2>&1) ||
      parley_die "openssl could not make the CA in $dir"
    rm -f "$dir"/*.srl
  fi
  for name in "$@"; do
    [[ -s $dir/$name.pem && -s $dir/$name.key ]] && continue
    parley_say "making the certificate of $name in $dir ($name.pem, $name.key)"
    (umask 077 &&
      openssl req "${curve[@]}" -nodes -subj "/CN=$name" -keyout "$dir/$name.key" \
        -out "$dir/$name.csr" >/dev/null 2>&1 &&
      openssl x509 -req -in "$dir/$name.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
        -CAcreateserial -days 825 -extfile <(printf '%s\n' "$ext") \
        -out "$dir/$name.pem" >/dev/null 2>&1) ||
      parley_die "openssl could not make the certificate of $name in $dir"
    rm -f "$dir/$name.csr"
    chmod "$key_mode" "$dir/$name.key"
    chmod 644 "$dir/$name.pem"
  done
  rm -f "$dir/ca.srl"
  chmod 644 "$dir/ca.pem"
}

# ---------------------------------------------------------------------------
# Process helpers

# True while PID is a live process (a zombie counts as gone).
_parley_alive() {
  local pid=$1 state
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  state=$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$pid/status" 2>/dev/null || true)
  [[ $state != Z ]]
}

# True when PID's command line contains WORD (guards against a reused PID).
_parley_cmd_has() {
  local pid=$1 word=$2
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$word"
}

# _parley_wait_gone PID SECONDS: polls until PID has exited.
_parley_wait_gone() {
  local pid=$1 i
  for ((i = 0; i < $2 * 10; i++)); do
    _parley_alive "$pid" || return 0
    sleep 0.1
  done
  ! _parley_alive "$pid"
}

# True when something listens on TCP 127.0.0.1:PORT (or on all addresses).
_parley_port_listening() {
  command -v ss >/dev/null 2>&1 || return 1
  ss -Hltn "sport = :$1" 2>/dev/null | grep -q .
}

# _parley_port_held LOG OFFSET PORT: true (after a 5 s pause) when the server
# logged, past OFFSET, that the port was in use: a TIME_WAIT socket of some
# other connection can hold it for up to a minute while nothing listens.
_parley_port_held() {
  tail -c +"$(($2 + 1))" "$1" 2>/dev/null | grep -q 'Address already in use' || return 1
  parley_warn "port $3 is held (TIME_WAIT?); retrying in 5 s"
  sleep 5
}

_parley_check_port() {
  local port=$1
  [[ $port =~ ^[0-9]+$ ]] && ((port > 0 && port < 32768)) ||
    parley_die "port '$port' must be a number from 1 to 32767 (32768 and up is the ephemeral range)"
}

# ---------------------------------------------------------------------------
# PostgreSQL

# The bin directory of the newest installed PostgreSQL major version.
parley_pg_bindir() {
  local v
  v=$(ls /usr/lib/postgresql 2>/dev/null | sort -n | tail -n 1)
  [[ -n $v && -x /usr/lib/postgresql/$v/bin/postgres ]] ||
    parley_die "PostgreSQL server binaries not found under /usr/lib/postgresql (package postgresql)"
  echo "/usr/lib/postgresql/$v/bin"
}

# Runs a PostgreSQL binary as the postgres user when root (initdb and postgres
# refuse to run as root), directly otherwise. From / so that a working
# directory the postgres user cannot enter does not matter.
_parley_pg_run() {
  if _parley_is_root; then
    (cd / && runuser -u postgres -- "$@")
  else
    (cd / && "$@")
  fi
}

# parley_pg_start DIR PORT: initdb (first time only) into DIR/data, owned by
# postgres when root, then starts the server on 127.0.0.1:PORT with its unix
# socket in DIR and PARLEY_PG_OPTS as extra server options (e.g.
# "-c fsync=off"). Waits until it accepts connections; retries while the port
# is briefly held (TIME_WAIT). Sets PARLEY_PG_PID. A server already running
# from DIR is reused.
parley_pg_start() {
  local dir=$1 port=$2 bin
  _parley_check_port "$port"
  bin=$(parley_pg_bindir)
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  local data="$dir/data" log="$dir/server.log"
  if ((${#dir} > 90)); then
    parley_die "PostgreSQL dir '$dir' is too long for a unix socket path; use a shorter one"
  fi
  if _parley_is_root; then
    chown postgres:postgres "$dir"
    chmod 700 "$dir"
    runuser -u postgres -- test -w "$dir" ||
      parley_die "the postgres user cannot reach '$dir' (a parent directory is closed to it)"
  fi

  # Already running from this directory (e.g. left over by a killed script)?
  if [[ -f $data/postmaster.pid ]]; then
    local old
    old=$(head -n 1 "$data/postmaster.pid")
    if _parley_alive "$old" && _parley_cmd_has "$old" postgres; then
      PARLEY_PG_PID=$old
      parley_say "PostgreSQL already running from $dir (PID $old); reusing it"
      return 0
    fi
  fi

  if [[ -d $data && ! -f $data/PG_VERSION ]]; then
    parley_warn "removing incomplete data directory $data"
    rm -rf "$data"
  fi
  if [[ ! -f $data/PG_VERSION ]]; then
    parley_say "PostgreSQL: initdb in $data"
    _parley_pg_run "$bin/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 \
      >"$dir/initdb.log" 2>&1 || {
      cat "$dir/initdb.log" >&2
      parley_die "initdb failed (log: $dir/initdb.log)"
    }
  elif [[ $(cat "$data/PG_VERSION") != "$(basename "$(dirname "$bin")")" ]]; then
    parley_die "$data was made by PostgreSQL $(cat "$data/PG_VERSION"), but $bin is installed; remove $dir to start over"
  fi

  local opts="-p $port -k '$dir' -c listen_addresses=127.0.0.1 ${PARLEY_PG_OPTS:-}"
  local attempt offset
  for attempt in 1 2 3 4 5 6 7 8 9 10 11 12; do
    if _parley_port_listening "$port"; then
      parley_die "port $port is already in use by another process; choose another port"
    fi
    parley_say "PostgreSQL: starting on 127.0.0.1:$port (attempt $attempt)"
    offset=$(stat -c %s "$log" 2>/dev/null || echo 0)
    if _parley_pg_run "$bin/pg_ctl" -D "$data" -l "$log" -w -t 60 -o "$opts" start \
      >"$dir/pg_ctl.log" 2>&1 &&
      "$bin/pg_isready" -q -h 127.0.0.1 -p "$port" -t 10; then
      PARLEY_PG_PID=$(head -n 1 "$data/postmaster.pid")
      parley_say "PostgreSQL: ready on 127.0.0.1:$port (PID $PARLEY_PG_PID, log $log)"
      return 0
    fi
    _parley_port_held "$log" "$offset" "$port" && continue
    break
  done
  cat "$dir/pg_ctl.log" >&2 || true
  tail -n 20 "$log" >&2 || true
  parley_pg_stop "$dir" # in case it came up but did not answer
  parley_die "PostgreSQL would not start on port $port (log: $log)"
}

# parley_pg_stop DIR: fast shutdown (SIGINT) of the server whose PID is in
# DIR/data/postmaster.pid, waiting until it has exited. No-op when none runs.
parley_pg_stop() {
  local dir=$1 pidfile="$1/data/postmaster.pid" pid
  [[ -f $pidfile ]] || return 0
  pid=$(head -n 1 "$pidfile")
  if ! _parley_alive "$pid" || ! _parley_cmd_has "$pid" postgres; then
    return 0 # stale PID file of a server that is gone
  fi
  parley_say "PostgreSQL: stopping PID $pid"
  kill -INT "$pid" 2>/dev/null || return 0
  _parley_wait_gone "$pid" 30 && return 0
  parley_warn "PostgreSQL PID $pid still running after 30 s; immediate shutdown"
  kill -QUIT "$pid" 2>/dev/null || true
  _parley_wait_gone "$pid" 10 && return 0
  kill -KILL "$pid" 2>/dev/null || true
  _parley_wait_gone "$pid" 5
}

# ---------------------------------------------------------------------------
# Redis

# parley_redis_start DIR PORT: a daemonized, non-persistent Redis on
# 127.0.0.1:PORT with PID file, log and working directory in DIR. Waits until
# it answers PING; retries while the port is briefly held. Sets
# PARLEY_REDIS_PID. A server already running from DIR is reused.
parley_redis_start() {
  local dir=$1 port=$2
  _parley_check_port "$port"
  command -v redis-server >/dev/null 2>&1 || parley_die "redis-server not found (package redis-server)"
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  local pidfile="$dir/redis.pid" log="$dir/redis.log"

  if [[ -f $pidfile ]]; then
    local old
    old=$(cat "$pidfile")
    if _parley_alive "$old" && _parley_cmd_has "$old" redis-server; then
      PARLEY_REDIS_PID=$old
      parley_say "Redis already running from $dir (PID $old); reusing it"
      return 0
    fi
    rm -f "$pidfile"
  fi

  local attempt offset i pid
  for attempt in 1 2 3 4 5 6 7 8 9 10 11 12; do
    if _parley_port_listening "$port"; then
      parley_die "port $port is already in use by another process; choose another port"
    fi
    parley_say "Redis: starting on 127.0.0.1:$port (attempt $attempt)"
    offset=$(stat -c %s "$log" 2>/dev/null || echo 0)
    redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
      --pidfile "$pidfile" --logfile "$log" --dir "$dir" >/dev/null ||
      parley_die "redis-server failed to start (log: $log)"
    # --daemonize returns before the bind; the server's own PID answering
    # PING on our port is the proof that it is ours and ready.
    for ((i = 0; i < 100; i++)); do
      pid=$(cat "$pidfile" 2>/dev/null || true)
      if [[ -n $pid ]] && redis-cli -h 127.0.0.1 -p "$port" info server 2>/dev/null |
        grep -q "^process_id:$pid"; then
        PARLEY_REDIS_PID=$pid
        parley_say "Redis: ready on 127.0.0.1:$port (PID $pid, log $log)"
        return 0
      fi
      if [[ -n $pid ]] && ! _parley_alive "$pid"; then break; fi
      if tail -c +"$((offset + 1))" "$log" 2>/dev/null | grep -q 'Address already in use'; then
        break
      fi
      sleep 0.1
    done
    if [[ -n $pid ]] && _parley_alive "$pid"; then
      kill -TERM "$pid" 2>/dev/null || true
      _parley_wait_gone "$pid" 5 || true
    fi
    _parley_port_held "$log" "$offset" "$port" && continue
    break
  done
  tail -n 20 "$log" >&2 || true
  parley_die "Redis would not start on port $port (log: $log)"
}

# parley_redis_stop DIR: SIGTERM to the PID in DIR/redis.pid, waiting until
# it has exited. No-op when none runs.
parley_redis_stop() {
  local dir=$1 pidfile="$1/redis.pid" pid
  [[ -f $pidfile ]] || return 0
  pid=$(cat "$pidfile")
  if ! _parley_alive "$pid" || ! _parley_cmd_has "$pid" redis-server; then
    rm -f "$pidfile"
    return 0
  fi
  parley_say "Redis: stopping PID $pid"
  kill -TERM "$pid" 2>/dev/null || return 0
  if ! _parley_wait_gone "$pid" 15; then
    parley_warn "Redis PID $pid still running after 15 s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
    _parley_wait_gone "$pid" 5 || true
  fi
  rm -f "$pidfile"
}
