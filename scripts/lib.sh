# Shared helpers of scripts/run and scripts/test. Source it; do not run it.
# Servers started here bind 127.0.0.1 on ports below 32768 and are stopped by
# PID, never by name.

PARLEY_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Runs a command as root: directly when we are root, through sudo otherwise.
as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else die "need root (or sudo) to run: $*"; fi
}

# Installs whatever of scripts/packages.txt is missing; quick when nothing is.
parley_install_deps() {
  local want missing=()
  want=$(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$PARLEY_ROOT/scripts/packages.txt")
  for p in $want; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    say "dependencies: all installed"
    return 0
  fi
  say "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -q
  as_root apt-get install -y -q --no-install-recommends "${missing[@]}"
}

# parley_build [build-type]: configures build/ once, then builds it.
parley_build() {
  local type=${1:-${PARLEY_BUILD_TYPE:-Release}}
  local dir="$PARLEY_ROOT/build"
  if [ ! -f "$dir/build.ninja" ]; then
    say "configuring ($type)"
    cmake -S "$PARLEY_ROOT" -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE="$type" >/dev/null
  fi
  say "building"
  cmake --build "$dir" -j"${PARLEY_BUILD_JOBS:-2}"
}

pg_bindir() {
  local v
  v=$(ls /usr/lib/postgresql 2>/dev/null | sort -n | tail -1)
  [ -n "$v" ] || die "PostgreSQL server binaries not found (is the postgresql package installed?)"
  echo "/usr/lib/postgresql/$v/bin"
}

# Runs a PostgreSQL binary as the postgres user when we are root (initdb and
# postgres refuse to run as root).
pg_run() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# parley_pg_start DIR PORT: a private server with data in DIR/data, its
# socket in DIR, extra server options in PARLEY_PG_OPTS.
parley_pg_start() {
  local dir=$1 port=$2 bin
  bin=$(pg_bindir)
  mkdir -p "$dir"
  [ "$(id -u)" -eq 0 ] && chown postgres:postgres "$dir"
  chmod 700 "$dir"
  if [ ! -f "$dir/data/PG_VERSION" ]; then
    pg_run "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 \
      >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; die "initdb failed"; }
  fi
  local opts="-p $port -k $dir -c listen_addresses=127.0.0.1 ${PARLEY_PG_OPTS:-}"
  for attempt in 1 2 3 4 5 6; do
    if pg_run "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 -o "$opts" start \
      >/dev/null 2>&1; then
      say "PostgreSQL on 127.0.0.1:$port (pid $(head -1 "$dir/data/postmaster.pid"))"
      return 0
    fi
    # A TIME_WAIT socket can hold the port for a while; wait and retry.
    say "PostgreSQL did not start (attempt $attempt); retrying"
    sleep 5
  done
  tail -20 "$dir/server.log" >&2
  die "PostgreSQL would not start on port $port"
}

parley_pg_stop() {
  local dir=$1 pid
  [ -f "$dir/data/postmaster.pid" ] || return 0
  pid=$(head -1 "$dir/data/postmaster.pid")
  kill -INT "$pid" 2>/dev/null || return 0
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}

# parley_redis_start DIR PORT
parley_redis_start() {
  local dir=$1 port=$2
  mkdir -p "$dir"
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
    --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" --dir "$dir" >/dev/null
  for _ in $(seq 100); do
    redis-cli -p "$port" ping >/dev/null 2>&1 && {
      say "Redis on 127.0.0.1:$port (pid $(cat "$dir/redis.pid"))"
      return 0
    }
    sleep 0.1
  done
  tail -20 "$dir/redis.log" >&2
  die "Redis would not start on port $port"
}

parley_redis_stop() {
  local dir=$1 pid
  [ -f "$dir/redis.pid" ] || return 0
  pid=$(cat "$dir/redis.pid")
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}
