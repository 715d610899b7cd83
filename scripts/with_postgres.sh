#!/usr/bin/env bash
# Run a command against a throwaway PostgreSQL cluster: initdb in a temp dir, listen
# only on a unix socket there, export DATABASE_URL, stop and delete it afterwards.
# initdb and postgres refuse to run as root, so as root they run as `postgres`.
set -euo pipefail

PG_BIN=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}
if [ -z "$PG_BIN" ] || [ ! -x "$PG_BIN/initdb" ]; then
  echo "with_postgres: PostgreSQL server binaries not found (apt-get install postgresql)" >&2
  exit 1
fi

as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

PGROOT=$(mktemp -d /tmp/voicecalls-pg.XXXXXX)
chmod 755 "$PGROOT"
[ "$(id -u)" = 0 ] && chown postgres "$PGROOT"
as_pg "$PG_BIN/initdb" -D "$PGROOT/data" -U postgres -A trust -E UTF8 --no-sync >/dev/null

cleanup() {
  as_pg "$PG_BIN/pg_ctl" -D "$PGROOT/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$PGROOT"
}
trap cleanup EXIT

# Durability off: a throwaway cluster for tests and benchmarks.
as_pg "$PG_BIN/pg_ctl" -D "$PGROOT/data" -w -l "$PGROOT/server.log" -o \
  "-c listen_addresses='' -c unix_socket_directories='$PGROOT' -c fsync=off \
   -c synchronous_commit=off -c full_page_writes=off -c max_connections=200 \
   ${PG_EXTRA_OPTS:-}" start >/dev/null

"$PG_BIN/createdb" -h "$PGROOT" -U postgres voicecalls
export DATABASE_URL="postgres://postgres@/voicecalls?host=$PGROOT"
export PGHOST="$PGROOT" PGUSER=postgres PGDATABASE=voicecalls
echo "with_postgres: PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') on $PGROOT" >&2
"$@"
