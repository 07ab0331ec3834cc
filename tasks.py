"""Invoke's entry point in a checkout: slony-migrate's tasks (fabfile.cli), plus
testbed.* for rehearsals.

In a checkout, inv drives the testbed: its database (shotserver04) is the default.
An installed package has the same tasks as the `slony-migrate` command, without
testbed.* and without a default database.
"""

from invoke import Collection

from fabfile.cli import namespace
from testbed import DATABASE
from testbed import tasks as testbed_tasks

ns = namespace()
ns.configure({"slony": {"database": DATABASE}})
ns.add_collection(Collection.from_module(testbed_tasks, name="testbed"))
