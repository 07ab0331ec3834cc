"""Checks as findings: read-only checks of the servers, each yielding Findings (host,
level, object, message, fix) computed from facts. They never print and never change
anything; one function prints them (findings.report). preflight runs them before a
migration; status and the switchover may run any of them again.
"""
