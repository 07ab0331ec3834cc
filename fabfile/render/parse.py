"""Pure parsers of what the servers print (slon logs, apt, df, os-release) and small
formatters. No I/O."""

from __future__ import annotations

import calendar
import re
import time

COPY_LINE = re.compile(
    r"^(?P<ts>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\S*"
    r" \S+\s+\S+\s+(?:remoteWorkerThread_\d+: )?"
    r"(?:(?P<bytes>\d+) bytes copied for table (?P<table>\S+)"
    r"|Begin COPY of table (?P<begin>\S+)"
    r"|(?P<copyset>copy_set \d+ done in (?P<secs>[\d.]+) seconds))",
    re.M,
)
SET_START = re.compile(
    r"^(?P<ts>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\S* \S+\s+\S+\s+copy_set (?P<set>\d+) - ",
    re.M,
)
RETRY = re.compile(r"data copy for set \d+ failed (\d+) times", re.M)
ERROR_LINE = re.compile(
    r"^(?P<ts>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\S* \S+\s+(?:ERROR|FATAL)\s+(?P<msg>.*)$",
    re.M,
)
SYNC_DONE = re.compile(
    r"^(?P<ts>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\S* \S+\s+\S+\s+remoteWorkerThread_\d+:"
    r" SYNC \d+ done",
    re.M,
)


FIELD, RECORD = (
    "\0",
    "\x1e",
)  # psql's separators where it has no --csv (before 12): -z, -R


def unaligned(text: str) -> list[list[str]] | None:
    """The rows of one result set as psql -A -t -z -R RECORD prints it (it ends the
    last record with a newline; a field never holds NUL), or None when the records
    disagree on their number of fields (a value holding RECORD, or two result sets).
    NULL reads as ''."""
    if not text:
        return []
    rows = [record.split(FIELD) for record in text.removesuffix("\n").split(RECORD)]
    return rows if len({len(r) for r in rows}) == 1 else None


def major(version_num: int) -> str:
    """The major version as Debian's package names spell it: "9.6" for 90624 (before
    10 it had two parts), "15" for 150004."""
    return (
        f"{version_num // 10000}.{version_num // 100 % 100}"
        if version_num < 100000
        else str(version_num // 10000)
    )


CONFIGURED_CLUSTER = re.compile(
    r"^(?:cluster_name\s*=\s*|\$CLUSTER_NAME\s*=\s*)'(?P<name>[^'\n]*)'", re.M
)


def configured_cluster(text: str | None) -> str | None:
    """The cluster a slon.conf or slon_tools.conf that slony-migrate wrote is for
    (None: no such file, or not the tool's)."""
    if not text or "slony-migrate" not in text.split("\n", 1)[0]:
        return None
    m = CONFIGURED_CLUSTER.search(text)
    return m.group("name") if m else None


DICT_OPTION = re.compile(r"(\w+)\s*=\s*'((?:[^']|'')*)'")
# The file each option of a text search dictionary names, in $SHAREDIR/tsearch_data
# (PostgreSQL's get_tsearch_config_filename): option, or (option, template).
DICT_FILES = {
    ("dictfile", "thesaurus"): "ths",
    "dictfile": "dict",
    "afffile": "affix",
    "stopwords": "stop",
    "synonyms": "syn",
    "rules": "rules",
}


def dictionary_files(template: str, options: str) -> list[str]:
    """The files (in tsearch_data) a text search dictionary's init options name, as
    pg_ts_dict.dictinitoption holds them (`dictfile = 'en_us', afffile = 'en_us'`)."""
    out = []
    for key, value in DICT_OPTION.findall(options):
        key = key.lower()
        ext = DICT_FILES.get((key, template)) or DICT_FILES.get(key)
        if ext:
            out.append(f"{value.replace(chr(39) * 2, chr(39)).lower()}.{ext}")
    return out


def float_digits(*version_nums: int) -> int:
    """extra_float_digits under which every server prints a float8 as the same text:
    1 (shortest exact) when all are 12 or newer, 3 (17 digits) when all are older,
    else 0 (15 digits, the one format both kinds print alike)."""
    new = [v >= 120000 for v in version_nums]
    return 1 if all(new) else 3 if not any(new) else 0


def plain(name: str) -> str:
    """ "public"."t" and public.t both become public.t, for matching log lines with
    catalog names."""
    return name.replace('"', "")


def parse_copy_log(text: str) -> dict:
    """What the subscriber's slon log says of the latest initial copy: start, tables
    done, current table."""
    starts = list(SET_START.finditer(text))
    if not starts:
        return {
            "started": None,
            "done": {},
            "current": None,
            "finished": False,
            "retries": 0,
            "error": None,
        }
    last = starts[-1]
    tail = text[last.start() :]
    done, current, finished = {}, None, False
    for m in COPY_LINE.finditer(tail):
        if m.group("table"):
            done[plain(m.group("table"))] = int(m.group("bytes"))
            current = None
        elif m.group("begin"):
            current = plain(m.group("begin"))
        elif m.group("copyset"):
            finished = True
    retries = [
        int(n) for n in RETRY.findall(text)
    ]  # counted over the attempts before the latest one too
    errors = [condense(m.group("msg")) for m in ERROR_LINE.finditer(text)]
    return {
        "started": last.group("ts"),
        "done": done,
        "current": current,
        "finished": finished,
        "retries": max(retries) if retries else 0,
        "error": errors[-1] if errors else None,
    }


def condense(message: str) -> str:
    """What went wrong in a slon ERROR line: PostgreSQL's own words when it quotes
    them, without the query."""
    if "ERROR:" in message:
        return message.rsplit("ERROR:", 1)[1].strip()
    return re.sub(r"^remoteWorkerThread_\d+: ", "", message).strip()


WORKER_RESTART = re.compile(
    r"^(?P<ts>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\S* \S+\s+\S+\s+.*restart of worker",
    re.M,
)


def worker_restart(text: str, since: float) -> str:
    """'' unless a slon log says, at `since` (epoch seconds) or later, that slon restarts
    its worker; then why (the error before it, as condense gives it) or 'restart'."""
    found = [m for m in WORKER_RESTART.finditer(text) if epoch(m.group("ts")) >= since]
    if not found:
        return ""
    errors = [
        condense(m.group("msg"))
        for m in ERROR_LINE.finditer(text, 0, found[-1].start())
        if epoch(m.group("ts")) >= since
    ]
    return errors[-1] if errors else "restart"


def slon_failing(text: str) -> tuple[str, str] | None:
    """(time, error) when the last thing a slon log says is an error (nothing applied
    since), else None."""
    errors = list(ERROR_LINE.finditer(text))
    if not errors:
        return None
    last = errors[-1]
    done = [m.group("ts") for m in SYNC_DONE.finditer(text, last.end())]
    return None if done else (last.group("ts"), condense(last.group("msg")))


def copied_fraction(sizes: dict[str, int], log: dict, current_bytes: int) -> float:
    """How much of the origin's tables (by size) the initial copy has done, 0 to 1."""
    total = sum(sizes.values()) or 1
    done_bytes = sum(sizes.get(t, 0) for t in log["done"])
    return min(total, done_bytes + current_bytes) / total


def progress_line(
    sizes: dict[str, int], log: dict, current_bytes: int, elapsed: float
) -> str:
    """One line: a bar, percent, MB copied of the origin's size, tables done, ETA,
    current table."""
    total = sum(sizes.values()) or 1
    frac = copied_fraction(sizes, log, current_bytes)
    copied = frac * total
    bar = "#" * int(frac * 20) + "." * (20 - int(frac * 20))
    eta = (
        f"ETA {elapsed * (1 - frac) / frac:.0f} s"
        if frac > 0.02 and elapsed > 0
        else "ETA --"
    )
    now = f", copying {log['current']}" if log["current"] else ""
    retry = f", {log['retries']} failed attempt(s) before" if log["retries"] else ""
    return (
        f"[{bar}] {frac * 100:3.0f}% {copied / 1e6:.0f}/{total / 1e6:.0f} MB, "
        f"{len(log['done'])}/{len(sizes)} tables, {eta}{now}{retry}"
    )


# --- system output --------------------------------------------------------------------


def os_release(text: str) -> dict[str, str]:
    """/etc/os-release as a dict (quotes removed)."""
    return dict(
        (k, v.strip('"'))
        for k, _, v in (l.partition("=") for l in text.splitlines())
        if k
    )


def version_key(version: str) -> tuple[int, ...]:
    """2.2.11 -> (2, 2, 11): versions in numeric order."""
    return tuple(map(int, version.split(".")))


def slony_modules(listing: str) -> list[str]:
    """Slony versions whose slony1_funcs.VERSION.so is in a directory listing (`ls`
    output), oldest first."""
    found = set(re.findall(r"^slony1_funcs\.(\d+(?:\.\d+)*)\.so$", listing, re.M))
    return sorted(found, key=version_key)


def apt_policy(text: str, packages: list[str]) -> dict[str, tuple[str, str]]:
    """{package: (installed version or '', candidate version or '')} from `apt-cache
    policy` output."""
    found: dict[str, tuple[str, str]] = {}
    for block in re.split(r"^(?=\S)", text, flags=re.M):
        m = re.match(r"^(\S+):\n", block)
        if not m:
            continue
        inst = re.search(r"Installed: (\S+)", block)
        cand = re.search(r"Candidate: (\S+)", block)
        clean = lambda v: "" if not v or v.group(1) == "(none)" else v.group(1)  # noqa: E731
        found[m.group(1)] = (clean(inst), clean(cand))
    return {p: found.get(p, ("", "")) for p in packages}


def upstream(version: str) -> str:
    """Upstream part of a Debian version: 2.2.11-6 -> 2.2.11."""
    return re.sub(r"^\d+:", "", version).rsplit("-", 1)[0]


def parse_df_available(text: str) -> int:
    """Bytes available from `df --output=avail -B1 PATH` (a header line, then the
    number)."""
    return int(text.split()[-1])


def normal_locale(name: str) -> str:
    """A locale name as glibc compares it: the codeset lower-case without punctuation
    (C.UTF-8 = C.utf8)."""
    base, dot, rest = name.partition(".")
    codeset, at, modifier = rest.partition("@")
    return base + dot + re.sub(r"[^a-z0-9]", "", codeset.lower()) + at + modifier


def size(n: float) -> str:
    """Bytes as a short human number: 512 B, 20 MB, 1.5 GB."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.1f} {unit}" if n < 10 and unit != "B" else f"{n:.0f} {unit}"
        n /= 1000
    raise AssertionError("not reached")


def slony_version(text: str) -> str | None:
    """The version slonik -v prints (slonik version 2.2.11)."""
    m = re.search(r"([0-9]+\.[0-9]+\.[0-9]+)", text)
    return m.group(1) if m else None


def epoch(ts: str) -> float:
    """'2026-11-25 23:08:05' (UTC) as seconds since the epoch."""
    return float(calendar.timegm(time.strptime(ts, "%Y-%m-%d %H:%M:%S")))


def pg_version(text: str) -> tuple[int, int] | None:
    """(major, minor) from `pg_dump --version` and the like: 'pg_dump (PostgreSQL)
    17.6 (Debian ...)'."""
    m = re.search(r"\(PostgreSQL\) (\d+)(?:\.(\d+))?", text)
    return (int(m.group(1)), int(m.group(2) or 0)) if m else None


# The first release of each major whose pg_dump no longer lets object names smuggle psql
# meta-commands into a dump (CVE-2025-8714, August 2025); majors before 13 got no fix.
PG_DUMP_FIXED = {13: 22, 14: 19, 15: 14, 16: 10, 17: 6}


def pg_dump_safe(version: tuple[int, int]) -> bool:
    major, minor = version
    return major >= 18 or (major in PG_DUMP_FIXED and minor >= PG_DUMP_FIXED[major])


def route_source(text: str) -> str | None:
    """The source address in `ip -o route get ADDR` output."""
    m = re.search(r"\bsrc (\S+)", text)
    return m.group(1) if m else None
