"""Read-only facts about the servers: one query or command each, parsed into plain
values.

Never changes anything. All catalog SQL of slony-migrate lives here; the parsing of what
comes back is pure (fabfile.render.parse). `from fabfile import facts` gives every fact
by name.
"""

from .catalog import *  # noqa: F401,F403
from .slony import *  # noqa: F401,F403
from .system import *  # noqa: F401,F403
