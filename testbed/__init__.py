"""The docker-compose testbed and its tools: not part of the installed product.

compose: bring the testbed up and down; tasks: `inv testbed.*`; writer: a bounded writer
for rehearsals and tests; bed: the testbed as the tests and the benchmark see it.
"""

DATABASE = "shotserver04"  # the demo database docker/seed.sql creates on db01
WRITER_TABLE = "public.auth_message"  # where the writer inserts its numbered rows
