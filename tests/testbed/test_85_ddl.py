"""Issue 13: the schema changes while replicating (inv ddl): a new column and a new
table, with a writer running; the new table joins the replication (a second set,
merged); verify passes."""

from __future__ import annotations

import time

from testbed.writer import Writer

ARGS = ("--master", "db01", "--slave", "db02")
CHANGE = """ALTER TABLE public.websites_domain ADD COLUMN note text;
CREATE TABLE public.ddl_added (id serial PRIMARY KEY, v text NOT NULL);
INSERT INTO public.ddl_added (v) VALUES ('made by the script');
"""


def test_ddl_while_a_writer_runs(migrated, tmp_path):
    bed = migrated
    if bed.status(*ARGS)["origin"] != "db01":
        bed.inv("switchback", *ARGS)
    change = tmp_path / "change.sql"
    change.write_text(CHANGE)
    before = bed.snapshot()
    dry = bed.inv("ddl", *ARGS, "--file", str(change), "--dry-run").stdout
    assert (
        "+CREATE TABLE public.ddl_added" in dry
        and "execute script (filename = '/var/run/slony1/ddl-replication-" in dry
    ), dry
    assert bed.snapshot() == before
    writer = Writer(
        bed.ssh_config, tag="ddl", rate=5, max_seconds=180, max_count=900
    ).start()
    try:
        run_ddl(bed, change, writer)
    finally:
        writer.stop()
        bed.reset()
        bed.sql(
            "db01",
            "DROP TABLE IF EXISTS public.ddl_added; "
            "ALTER TABLE public.websites_domain DROP COLUMN IF EXISTS note",
        )


def run_ddl(bed, change, writer) -> None:
    """The change while the writer writes; then every table equal on both nodes,
    every write once."""
    time.sleep(2)
    out = bed.inv("ddl", *ARGS, "--file", str(change), timeout=600).stdout
    assert (
        "add public.ddl_added, public.ddl_added_id_seq to the replication: set 2" in out
    ), out
    bed.sql(
        "db01",
        "INSERT INTO public.ddl_added (v) VALUES ('after'); UPDATE"
        " public.websites_domain SET note = 'noted' WHERE id = (SELECT min(id) FROM"
        " public.websites_domain)",
    )
    time.sleep(3)
    writer.stop()
    bed.wait_same(timeout=60)
    for name in ("db01", "db02"):
        assert bed.sql(name, "SELECT v FROM public.ddl_added ORDER BY id") == [
            ["made by the script"],
            ["after"],
        ]
        assert bed.sql(name, "SELECT count(*) FROM _replication.sl_set") == [
            ["1"]
        ]  # merged
    bed.assert_acknowledged_once(writer, "db02", timeout=60)
    bed.inv("verify", *ARGS)
    again = bed.inv("create-set", *ARGS).stdout
    assert "set 1 holds all 9 tables and 9 sequences" in again, again
