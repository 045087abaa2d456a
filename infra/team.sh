#!/usr/bin/env bash
# Team mode without Docker: the services of infra/docker-compose.yml started from packages on 127.0.0.1.
#   PostgreSQL (Debian's package) holding MLflow's store, MLflow's users and Prefect's database;
#   the MLflow server (basic auth, artifacts proxied to one folder) and the Prefect server, both from .venv.
#
#   POSTGRES_PASSWORD=... MLFLOW_AUTH_ADMIN_PASSWORD=... MLFLOW_FLASK_SERVER_SECRET_KEY=... infra/team.sh up
#   infra/team.sh env     # the client settings to export (MLflow and Prefect addresses, MLflow user)
#   infra/team.sh down    # stops every process `up` started; the data stays in TEAM_DIR
#
# Secrets come from the environment only: `up` refuses to start without them, and none is written to a file or put
# on a command line (the servers reach PostgreSQL through libpq's PGPASSWORD). Settings: TEAM_DIR (data, logs, pids;
# default .team/), TEAM_PG_PORT (5432), TEAM_MLFLOW_PORT (5000), TEAM_PREFECT_PORT (4200), TEAM_MLFLOW_WORKERS (2).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export TEAM_DIR=${TEAM_DIR:-$ROOT/.team}   # exported: every process started here carries it (`down` checks on it)
PG_PORT=${TEAM_PG_PORT:-5432}
MLFLOW_PORT=${TEAM_MLFLOW_PORT:-5000}
PREFECT_PORT=${TEAM_PREFECT_PORT:-4200}
PG_BIN=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}
VENV=${VENV:-$ROOT/.venv}
HOST=127.0.0.1
PG_DATA=$TEAM_DIR/pg/data

die() { echo "team.sh: $*" >&2; exit 1; }

need_secrets() {
  local missing=()
  for var in POSTGRES_PASSWORD MLFLOW_AUTH_ADMIN_PASSWORD MLFLOW_FLASK_SERVER_SECRET_KEY; do
    [ -n "${!var:-}" ] || missing+=("$var")
  done
  [ ${#missing[@]} -eq 0 ] || die "set ${missing[*]} in the environment (no defaults: these guard the team's servers)"
  [ ${#MLFLOW_AUTH_ADMIN_PASSWORD} -ge 12 ] || die "MLFLOW_AUTH_ADMIN_PASSWORD needs at least 12 characters (MLflow's rule)"
}

# PostgreSQL refuses to run as root: as root, its commands run as the `postgres` user of Debian's package.
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

pg_up() {
  [ -x "$PG_BIN/initdb" ] || die "no PostgreSQL under /usr/lib/postgresql: run infra/system_deps.sh"
  ! (exec 3<>"/dev/tcp/$HOST/$PG_PORT") 2>/dev/null || die "port $PG_PORT is taken (a system PostgreSQL?): set TEAM_PG_PORT"
  mkdir -p "$TEAM_DIR/pg"
  if [ "$(id -u)" = 0 ]; then
    chown postgres: "$TEAM_DIR/pg"
    as_pg test -w "$TEAM_DIR/pg" || die "the postgres user cannot reach $TEAM_DIR: pick a TEAM_DIR whose parents it can enter"
  fi
  local fresh=
  if [ ! -f "$PG_DATA/PG_VERSION" ]; then
    local pwfile=$TEAM_DIR/pg/.pw   # read by initdb as the postgres user, gone right after
    (umask 077; printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile")
    [ "$(id -u)" != 0 ] || chown postgres: "$pwfile"
    as_pg "$PG_BIN/initdb" -D "$PG_DATA" -U team --pwfile="$pwfile" --auth=scram-sha-256 --encoding=UTF8 \
      --locale=C.UTF-8 >"$TEAM_DIR/initdb.log" || { rm -f "$pwfile"; die "initdb failed: $TEAM_DIR/initdb.log"; }
    rm -f "$pwfile"
    fresh=1
  fi
  as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$TEAM_DIR/pg/server.log" -w -t 60 start \
    -o "-c listen_addresses=$HOST -p $PG_PORT -k '$TEAM_DIR/pg'" >/dev/null
  [ -z "$fresh" ] || psql -q -v ON_ERROR_STOP=1 -h "$HOST" -p "$PG_PORT" -U team -d postgres -f "$ROOT/infra/team/init.sql"
}

# A server in its own session, so `down` stops it and every worker it forked as one process group.
start() {   # name, health url, command...
  local name=$1 url=$2; shift 2
  ! curl -s -o /dev/null "$url" || die "something already answers at ${url%/*}: stop it or set another port"
  setsid "$@" >"$TEAM_DIR/$name.log" 2>&1 < /dev/null &
  echo $! >"$TEAM_DIR/$name.pid"
  for _ in $(seq 180); do
    curl -sf -o /dev/null "$url" && { echo "$name up: ${url%/*}"; return; }
    kill -0 "$(cat "$TEAM_DIR/$name.pid")" 2>/dev/null || break
    sleep 1
  done
  tail -n 30 "$TEAM_DIR/$name.log" >&2
  die "$name did not come up (log: $TEAM_DIR/$name.log)"
}

running() { [ -f "$TEAM_DIR/$1.pid" ] && kill -0 "$(cat "$TEAM_DIR/$1.pid")" 2>/dev/null; }

mlflow_up() {
  running mlflow && return
  mkdir -p "$TEAM_DIR/artifacts"
  sed "s#@127.0.0.1:5432/#@$HOST:$PG_PORT/#" "$ROOT/infra/team/basic_auth.ini" >"$TEAM_DIR/basic_auth.ini"
  # no GenAI job runner: it forks seven consumers (3 GB here) for features the pipeline does not use
  MLFLOW_AUTH_CONFIG_PATH=$TEAM_DIR/basic_auth.ini MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false start mlflow "http://$HOST:$MLFLOW_PORT/health" \
    "$VENV/bin/mlflow" server --app-name basic-auth \
    --backend-store-uri "postgresql://team@$HOST:$PG_PORT/mlflow" \
    --artifacts-destination "$TEAM_DIR/artifacts" \
    --host "$HOST" --port "$MLFLOW_PORT" --workers "${TEAM_MLFLOW_WORKERS:-2}"
}

prefect_up() {
  running prefect && return
  PREFECT_HOME=$TEAM_DIR/prefect PREFECT_SERVER_ANALYTICS_ENABLED=false \
    PREFECT_API_DATABASE_CONNECTION_URL="postgresql+asyncpg://team@$HOST:$PG_PORT/prefect" \
    start prefect "http://$HOST:$PREFECT_PORT/api/health" \
    "$VENV/bin/prefect" server start --host "$HOST" --port "$PREFECT_PORT"
}

up() {
  need_secrets
  export PGPASSWORD=$POSTGRES_PASSWORD MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=1
  mkdir -p "$TEAM_DIR"
  trap 'echo "team.sh: start failed, stopping what started" >&2; down' EXIT
  as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1 || pg_up
  mlflow_up
  prefect_up
  trap - EXIT
  echo "PostgreSQL up: $HOST:$PG_PORT (databases mlflow, mlflow_auth, prefect; user team)"
  env_lines
}

stop_group() {   # name: TERM the process group, KILL what is left after 20 s
  local pid
  [ -f "$TEAM_DIR/$1.pid" ] || return 0
  pid=$(cat "$TEAM_DIR/$1.pid")
  kill -TERM -- "-$pid" 2>/dev/null || true
  for _ in $(seq 40); do kill -0 -- "-$pid" 2>/dev/null || break; sleep 0.5; done
  kill -KILL -- "-$pid" 2>/dev/null || true
  rm -f "$TEAM_DIR/$1.pid"
}

down() {
  stop_group prefect
  stop_group mlflow
  if [ -f "$PG_DATA/PG_VERSION" ] && as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1; then
    as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w stop >/dev/null
  fi
  echo "team services stopped (data kept in $TEAM_DIR)"
}

env_lines() {
  cat <<EOF
# clients: set params.yaml tracking.tracking_uri to the MLflow address, then export
export MLFLOW_TRACKING_URI=http://$HOST:$MLFLOW_PORT
export MLFLOW_TRACKING_USERNAME=admin   # and MLFLOW_TRACKING_PASSWORD (yours; the admin's is MLFLOW_AUTH_ADMIN_PASSWORD)
export PREFECT_API_URL=http://$HOST:$PREFECT_PORT/api
EOF
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  env) env_lines ;;
  *) die "usage: infra/team.sh up|down|env" ;;
esac
