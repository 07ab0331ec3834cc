#!/usr/bin/env bash
# The rehearsal on a running, seeded testbed: migrate db01 -> db02, run it again (a no-op), compare.
set -euo pipefail
cd "$(dirname "$0")/.."
export INVOKE_SLONY_SSH_CONFIG=${INVOKE_SLONY_SSH_CONFIG:-$PWD/docker/.testbed/ssh_config}
export SLONY_MIGRATE_HOME=${SLONY_MIGRATE_HOME:-$PWD/docker/.testbed/secrets}
inv=.venv/bin/inv
t0=$(date +%s)
$inv migrate --master db01 --slave db02
t1=$(date +%s)
again=$($inv migrate --master db01 --slave db02 | tail -n 1)
t2=$(date +%s)
sql="SELECT string_agg(format('%s=%s', relname, n_live_tup), ' ' ORDER BY relname) FROM pg_stat_user_tables"
count() { ssh -F "$INVOKE_SLONY_SSH_CONFIG" "$1" "sudo -n -u postgres psql -X -At -d shotserver04" <<<"ANALYZE; $sql"; }
echo
echo "rehearsal summary"
echo "  migrate:        $((t1 - t0)) s"
echo "  second migrate: $((t2 - t1)) s: $again"
echo "  rows on db01:   $(count db01)"
echo "  rows on db02:   $(count db02)"
echo "  next: inv status / inv logs --master db01 --slave db02; inv testbed.down when done"
