"""The runbook's steps, one function each: read facts, decide, apply the Changes, check
again.

Each step is a no-op when its work is already done and says so, one line per finding or
change (`[host] step: message`); it raises StepError (host, object, fix) when it cannot
go on. The decisions are functions of their facts (plan_*), unit-tested without servers.
"""

from . import access, cluster, database, ddl, software

__all__ = [
    "access",
    "cluster",
    "database",
    "ddl",
    "software",
]  # the task layer calls them by module
