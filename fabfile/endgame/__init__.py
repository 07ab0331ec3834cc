"""After the runbook: preflight, status, verify, switchover/switchback, failover, finish.

Preflight, status and verify only read. Switchover, failover and finish check first, act through
slonik, then prove the result on the servers.
"""
