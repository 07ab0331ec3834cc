#!/bin/bash
# Testbed server: install the pinned SSH host key and the admin's public key, start sshd and
# PostgreSQL, stop both cleanly on SIGTERM.
set -euo pipefail
keys=/run/testbed
install -m 600 "$keys/ssh_host_ed25519_key" /etc/ssh/ssh_host_ed25519_key
install -m 644 "$keys/ssh_host_ed25519_key.pub" /etc/ssh/ssh_host_ed25519_key.pub
install -d -m 700 -o admin -g admin /home/admin/.ssh
install -m 600 -o admin -g admin "$keys/admin.pub" /home/admin/.ssh/authorized_keys
# The server certificate the testbed's own CA signed (verify-full from the slon host).
if [ -f "$keys/server.crt" ]; then
    conf=/etc/postgresql/$PG_MAJOR/main
    install -m 644 -o postgres -g postgres "$keys/server.crt" "$conf/server.crt"
    install -m 600 -o postgres -g postgres "$keys/server.key" "$conf/server.key"
    printf "ssl = on\nssl_cert_file = '%s/server.crt'\nssl_key_file = '%s/server.key'\n" "$conf" "$conf" \
        > "$conf/conf.d/ssl.conf"
fi
mkdir -p /run/sshd
/usr/sbin/sshd
pg_ctlcluster "$PG_MAJOR" main start

stop() {
    pg_ctlcluster "$PG_MAJOR" main stop -m fast || true
    kill "$(cat /run/sshd.pid)" 2>/dev/null || true
    exit 0
}
trap stop TERM INT
sleep infinity & wait $!
