"""Changes while replicating: DDL through EXECUTE SCRIPT (inv ddl); the tables and
sequences it creates join the replication through cluster.extend."""

from __future__ import annotations

import hashlib
import os

from .. import settings
from ..errors import StepError
from ..plan import apply, file_change, slonik_change
from ..render import slonik
from ..replication import require_origin
from ..session import Session
from .cluster import extend


def ddl(s: Session, file: str) -> None:
    """Apply a SQL file on both nodes through Slony (EXECUTE SCRIPT: the origin first,
    then the subscriber in its place among the data); then replicate the tables and
    sequences it created.
    """
    step, cl = "ddl", s.cluster
    if not os.path.isfile(file):
        raise StepError(
            "local",
            f"--file {file} does not exist",
            "give the SQL file with the schema change",
        )
    with open(file) as f:
        text = f.read()
    origin = require_origin(s)
    path = f"{cl.rundir}/ddl-{hashlib.sha256(text.encode()).hexdigest()[:12]}.sql"
    script = slonik.slonik_execute_script(cl, origin, path, settings.SLONIK)
    apply(
        s,
        file_change(
            s, s.slon_host, step, path, text, owner="postgres:postgres", mode="600"
        )
        + [
            slonik_change(
                s,
                step,
                script,
                f"execute script {os.path.basename(file)} on {origin.host}, then on the"
                " subscriber",
                then=lambda: s.slon_host.sudo(f"rm -f {path}", user="postgres"),
            )
        ],
    )
    extend(s, step, origin)
