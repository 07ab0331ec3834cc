"""Changes while replicating: DDL through EXECUTE SCRIPT (inv ddl); the tables and
sequences it creates join the replication through cluster.extend."""

from __future__ import annotations

import hashlib
import os
import re

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
    sequences it created. Slony's sessions resolve names in pg_catalog only: the file
    names every object with its schema (an unqualified one fails on the origin, and
    nothing is applied).
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
    if re.search(r"search_path", text, re.IGNORECASE):
        raise StepError(
            "local",
            f"--file {file} sets search_path: in Slony's sessions it would let the"
            " application's functions stand in for built-in ones, and on the subscriber"
            " it outlives the script",
            "name every object with its schema (public.t, not t) and take the SET out",
        )
    origin = require_origin(s)
    path = cl.ddl_file(hashlib.sha256(text.encode()).hexdigest()[:12])
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
