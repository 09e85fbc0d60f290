#!/usr/bin/env bash
# Make sure the PostgreSQL and RabbitMQ that the integration tests (and `make up`) talk to are
# running on 127.0.0.1: start them if installed but stopped; install them from Debian's
# packages if missing and we are root. Otherwise say why and exit 0: the tests then report
# themselves as skipped with the reason (and fail under CI=true).
set -u
log() { printf '[servers] %s\n' "$*"; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
  for _ in $(seq 1 60); do port_open "$1" && return 0; sleep 1; done
  return 1
}

is_root() { [ "$(id -u)" = 0 ]; }

apt_install() {
  is_root || return 1
  log "installing $* from Debian packages"
  if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -mmin -1440 2>/dev/null | head -n1)" ]; then
    apt-get update -qq || true
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

ensure_postgres() {
  if port_open 5432; then log "PostgreSQL is running"; return 0; fi
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    apt_install postgresql || { log "PostgreSQL is not installed and we are not root: PostgreSQL tests will be skipped"; return 0; }
    fresh=1
  fi
  version=$(ls /etc/postgresql | sort -V | tail -n1)
  log "starting PostgreSQL $version"
  pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null || pg_ctlcluster "$version" main start || true
  wait_port 5432 || { log "PostgreSQL did not come up"; return 0; }
  if [ "${fresh:-0}" = 1 ]; then
    # A fresh Debian install asks for a password on TCP: give the postgres role the one the
    # tests use (TEST_POSTGRES_URL defaults to postgres:postgres@127.0.0.1).
    su postgres -c "psql -q -c \"ALTER USER postgres PASSWORD 'postgres'\"" || true
  fi
}

ensure_rabbitmq() {
  if port_open 5672; then log "RabbitMQ is running"; return 0; fi
  if ! command -v rabbitmq-server >/dev/null 2>&1; then
    apt_install rabbitmq-server || { log "RabbitMQ is not installed and we are not root: RabbitMQ tests will be skipped"; return 0; }
  fi
  log "starting RabbitMQ"
  rabbitmq-server -detached >/dev/null 2>&1 || true
  if command -v rabbitmqctl >/dev/null 2>&1; then
    timeout 120 rabbitmqctl await_startup >/dev/null 2>&1 || true
  fi
  wait_port 5672 || log "RabbitMQ did not come up"
}

ensure_postgres
ensure_rabbitmq
exit 0
