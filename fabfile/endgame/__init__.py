"""After the runbook: status, verify, switchover/switchback, failover, finish (and the
pooler, the slons' timing and materialized views they use).

Status and verify only read. Switchover, failover and finish check first, act through
slonik, then prove the result on the servers.
"""

from . import each, failover, finish, returned, status, switchover, verify

__all__ = [
    "each",
    "failover",
    "finish",
    "returned",
    "status",
    "switchover",
    "verify",
]  # the task layer calls them by module
