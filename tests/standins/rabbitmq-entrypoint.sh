#!/bin/sh
# Stand-in for the official rabbitmq:3.10-management image's entrypoint (tests only; built from
# Debian's rabbitmq-server 3.10 by tests/live.py). It honours what the compose file relies on:
# RABBITMQ_DEFAULT_USER and RABBITMQ_DEFAULT_PASS, the management plugin, data in
# /var/lib/rabbitmq under the node name rabbit@<hostname>, and rabbitmq-diagnostics.
set -eu
conf=/etc/rabbitmq/rabbitmq.conf
{
    echo "loopback_users.guest = false"
    echo "listeners.tcp.default = 5672"
    [ -n "${RABBITMQ_DEFAULT_USER:-}" ] && echo "default_user = $RABBITMQ_DEFAULT_USER"
    [ -n "${RABBITMQ_DEFAULT_PASS:-}" ] && echo "default_pass = $RABBITMQ_DEFAULT_PASS"
    true
} > "$conf"
echo "[rabbitmq_management,rabbitmq_prometheus]." > /etc/rabbitmq/enabled_plugins
install -d -o rabbitmq -g rabbitmq /var/lib/rabbitmq /var/log/rabbitmq
chown -R rabbitmq:rabbitmq /var/lib/rabbitmq
if [ "$1" = rabbitmq-server ]; then
    cd /var/lib/rabbitmq
    export HOME=/var/lib/rabbitmq RABBITMQ_LOGS=-
    exec setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups /usr/lib/rabbitmq/bin/rabbitmq-server
fi
exec "$@"
