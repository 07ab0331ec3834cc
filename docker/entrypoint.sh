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

if [ "${TESTBED_ROLE:-db}" = app ]; then
    # The application's side: PgBouncer (transaction pooling) in front of the origin, db01 at first.
    # Its admin console admits postgres by peer on the unix socket; johann logs in with the password
    # the testbed made (also set on db01), which PgBouncer needs in clear to log in to the servers.
    password=$(cat "$keys/johann.password")
    if [ ! -f /etc/pgbouncer/testbed ]; then
        cat > /etc/pgbouncer/pgbouncer.ini <<INI
[databases]
shotserver04 = host=db01 port=5432 dbname=shotserver04

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = 6432
unix_socket_dir = /var/run/postgresql
auth_type = hba
auth_hba_file = /etc/pgbouncer/pg_hba.conf
auth_file = /etc/pgbouncer/userlist.txt
admin_users = postgres
pool_mode = transaction
default_pool_size = 4
server_tls_sslmode = require
ignore_startup_parameters = extra_float_digits
logfile = /var/log/postgresql/pgbouncer.log
pidfile = /var/run/postgresql/pgbouncer.pid
INI
        printf 'local pgbouncer postgres peer\nhost shotserver04 johann 127.0.0.1/32 scram-sha-256\n' \
            > /etc/pgbouncer/pg_hba.conf
        touch /etc/pgbouncer/testbed
    fi
    # postgres must be a known user for peer authentication too; its password (random) is never used.
    (umask 077; printf '"johann" "%s"\n"postgres" "%s"\n' "$password" "$(head -c 18 /dev/urandom | base64)" \
        > /etc/pgbouncer/userlist.txt)
    (umask 077; printf '127.0.0.1:6432:shotserver04:johann:%s\n' "$password" > /home/admin/.pgpass)
    chown postgres:postgres /etc/pgbouncer/pgbouncer.ini /etc/pgbouncer/pg_hba.conf /etc/pgbouncer/userlist.txt
    chmod 640 /etc/pgbouncer/pgbouncer.ini
    chown admin:admin /home/admin/.pgpass
    install -d -o postgres -g postgres /var/run/postgresql /var/log/postgresql
    su postgres -s /bin/sh -c "pgbouncer -d /etc/pgbouncer/pgbouncer.ini"
    stop() {
        kill "$(cat /var/run/postgresql/pgbouncer.pid)" 2>/dev/null || true
        kill "$(cat /run/sshd.pid)" 2>/dev/null || true
        exit 0
    }
    trap stop TERM INT
    sleep infinity & wait $!
fi

# The application (PgBouncer on app) logs in as johann, encrypted.
hba=/etc/postgresql/$PG_MAJOR/main/pg_hba.conf
if [ -n "${APP_ADDRESS:-}" ] && ! grep -q "testbed app" "$hba"; then
    echo "hostssl shotserver04 johann $APP_ADDRESS/32 scram-sha-256  # testbed app" >> "$hba"
fi
pg_ctlcluster "$PG_MAJOR" main start

stop() {
    pg_ctlcluster "$PG_MAJOR" main stop -m fast || true
    kill "$(cat /run/sshd.pid)" 2>/dev/null || true
    exit 0
}
trap stop TERM INT
sleep infinity & wait $!
