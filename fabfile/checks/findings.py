"""A Finding and the one function that prints findings. Pure but for `report`'s
output."""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable
from dataclasses import asdict, dataclass

from ..errors import StepError
from ..session import Output

OK, WARN, FAIL = "ok", "warn", "FAIL"


@dataclass(frozen=True)
class Finding:
    """What one check found about one object on one host: ok, warn or FAIL, and the
    fix for the latter two."""

    host: str
    level: str
    object: str
    message: str
    fix: str = ""

    def line(self) -> str:
        """One report line: `[host] preflight: level object: message; fix: how`."""
        return (
            f"[{self.host}] preflight: {self.level} {self.object}: {self.message}"
            + (f"; fix: {self.fix}" if self.fix else "")
        )


Findings = Generator[Finding, None, object]
"""A check: yields its findings as it makes them, and may return a value for the
checks after it."""


def report(out: Output, findings: Iterable[Finding]) -> int:
    """Print each finding as it comes (FAIL lines on stderr, warnings even when
    quiet); how many failed."""
    failed = 0
    for f in findings:
        failed += f.level == FAIL
        {FAIL: out.error, WARN: out.warn}.get(f.level, out.line)(f.line())
    return failed


def as_document(findings: Iterable[Finding]) -> dict:
    """Findings as `--json` prints them (docs/json.md): ok, errors and warnings as
    report lines, then every finding."""
    found = list(findings)
    return {
        "ok": not any(f.level == FAIL for f in found),
        "errors": [f.line() for f in found if f.level == FAIL],
        "warnings": [f.line() for f in found if f.level == WARN],
        "findings": [asdict(f) for f in found],
    }


def guarded(host: str, obj: str, check: Callable[..., Findings], *args) -> Findings:
    """Run one check (`value = yield from guarded(...)`): a probe that cannot run
    fails that check with the reason, not the whole run; its value is then None."""
    try:
        return (yield from check(*args))
    except StepError as e:
        yield Finding(
            e.host or host,
            FAIL,
            obj,
            e.message,
            e.fix or "run the check by hand on that host",
        )
        return None
