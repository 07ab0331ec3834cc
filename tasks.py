"""Invoke's entry point in a checkout: slony-migrate's tasks (fabfile.cli), plus
testbed.* for rehearsals.

An installed package has the same tasks as the `slony-migrate` command, without
testbed.*.
"""

from invoke import Collection

from fabfile.cli import namespace
from testbed import tasks as testbed_tasks

ns = namespace()
ns.add_collection(Collection.from_module(testbed_tasks, name="testbed"))
