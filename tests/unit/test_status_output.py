"""status for scripts and monitors: the exit codes, the monitoring plugin's line and
perfdata, Prometheus' text format, the JSON document; one status per state, generated
over the states and lags a pair can be in."""

from __future__ import annotations

import io
import itertools
import json
import re

import pytest

from fabfile.endgame import status as st
from fabfile.session import Output
from tests.unit.fakes import session

LIMITS = st.Thresholds(60, 300)


def healthy(**kw) -> st.Status:
    report = st.Status(
        "replication",
        1,
        "shotserver04",
        nodes=[
            st.NodeStatus(1, "db01", True, True),
            st.NodeStatus(2, "db02", True, True),
        ],
        origin="db01",
        subscription=st.Subscription("db02", True, True),
        slons={"node1": 10, "node2": 11},
        lag=[st.Lag("db02", 1, 0.4)],
    )
    for k, v in kw.items():
        setattr(report, k, v)
    return report


UNREACHABLE_MASTER = [
    st.NodeStatus(1, "db01", False, error="db01: host unreachable"),
    st.NodeStatus(2, "db02", True, True),
]
UNREACHABLE_SLAVE = [
    st.NodeStatus(1, "db01", True, True),
    st.NodeStatus(2, "db02", False, error="db02: host unreachable"),
]
NONE = {
    "nodes": [
        st.NodeStatus(1, "db01", False, error="a"),
        st.NodeStatus(2, "db02", False, error="b"),
    ],
    "origin": None,
    "subscription": None,
    "lag": None,
    "slons": {},
}
COPYING = {"fraction": 0.25, "line": "[#####...] 25%"}

# (state, what changes from a healthy pair, the code, words of the line)
STATES = [
    ("healthy", {}, st.OK, "db01 is the origin, db02 replicates (lag 0.4 s"),
    ("origin down", {"nodes": UNREACHABLE_MASTER}, st.CRITICAL, "inv failover"),
    ("subscriber down", {"nodes": UNREACHABLE_SLAVE}, st.CRITICAL, "db02 is unre"),
    ("nobody answers", NONE, st.UNKNOWN, "no node answers: a; b"),
    ("locked", {"locked": ["db01"]}, st.CRITICAL, "set 1 locked on db01"),
    ("paused", {"paused": "app: pgbouncer.ini"}, st.CRITICAL, "PgBouncer may be"),
    ("slon stopped", {"slons": {"node1": 10, "node2": None}}, st.CRITICAL, "node2"),
    ("slon fails", {"slon_errors": {"node2": "t: ERROR x"}}, st.CRITICAL, "fails"),
    ("lag warns", {"lag": [st.Lag("db02", 40, 61.0)]}, st.WARNING, "over 60 s"),
    ("lag critical", {"lag": [st.Lag("db02", 90, 301.0)]}, st.CRITICAL, "over 300"),
    ("no set", {"origin": None, "subscription": None}, st.WARNING, "does not exist"),
    (
        "copy running",
        {"subscription": st.Subscription("db02", True, False), "copy": COPYING},
        st.OK,
        "db02 initial copy 25% done",
    ),
    (
        "not subscribed",
        {"subscription": st.Subscription("db02", False, False)},
        st.WARNING,
        "db02 is not subscribed",
    ),
    ("move in flight", {"origins": {"db02": "db02"}}, st.WARNING, "a move is in"),
    ("superuser code", {"superuser_code": {"db02": ["x"]}}, st.WARNING, "superuser"),
]


@pytest.mark.parametrize(
    "state, changes, code, words", STATES, ids=[s[0] for s in STATES]
)
def test_each_state_has_its_code_and_one_line(state, changes, code, words):
    found, line = st.check(healthy(**changes), LIMITS)
    assert found == code, line
    assert line.startswith(f"SLONY {st.LABELS[code]} - ") and "\n" not in line
    assert words in line


# States that replace the origin or the subscription hide what depends on them (lag).
INDEPENDENT = [
    s for s in STATES if not {"origin", "subscription"} & set(s[1]) and s[2] != st.OK
]


@pytest.mark.parametrize(
    "a, b",
    [
        (a, b)
        for a, b in itertools.combinations(INDEPENDENT, 2)
        if not set(a[1]) & set(b[1])
    ],
    ids=lambda s: s[0],
)
def test_two_problems_at_once_give_the_worse_code_and_name_it(a, b):
    code, line = st.check(healthy(**{**a[1], **b[1]}), LIMITS)
    if st.UNKNOWN in (a[2], b[2]):
        assert code == st.UNKNOWN
        return
    assert code == max(a[2], b[2]), line
    worse = a if a[2] >= b[2] else b
    assert worse[3] in line


@pytest.mark.parametrize("seconds", [0.0, 12.5, 59.9, 60.0, 60.1, 299.0, 300.5, 9999.0])
def test_lag_against_the_thresholds(seconds):
    code, line = st.check(healthy(lag=[st.Lag("db02", 7, seconds)]), LIMITS)
    want = st.CRITICAL if seconds > 300 else st.WARNING if seconds > 60 else st.OK
    assert code == want, line
    assert f" | lag={seconds}s;60;300;0 lag_events=7;;;0 copy=100.0%;;;0;100" in line


def test_perfdata_follows_the_plugin_format():
    line = st.check(healthy(**STATES[11][1]), LIMITS)[1]
    data = line.split(" | ", 1)[1].split()
    spec = re.compile(r"^[a-z_]+=[\d.]+(s|%)?;[\d.]*;[\d.]*;[\d.]*(;[\d.]*)?$")
    assert all(spec.match(d) for d in data), data
    assert "copy=25.0%;;;0;100" in data
    assert " | " not in st.check(healthy(**NONE), LIMITS)[1]


PROMETHEUS_LINE = re.compile(
    r'^slony_migrate_[a-z_]+\{cluster="[^"]*"(,(node|slon)="[^"]*")?\} -?[\d.]+$'
)


@pytest.mark.parametrize(
    "state, changes, code, words", STATES, ids=[s[0] for s in STATES]
)
def test_prometheus_text_format(state, changes, code, words):
    text = st.prometheus([healthy(**changes)], LIMITS)
    names = set()
    for l in text.splitlines():
        if l.startswith("# HELP ") or l.startswith("# TYPE "):
            names.add(l.split()[2])
            continue
        assert PROMETHEUS_LINE.match(l), l
        assert l.split("{")[0] in names, l
    assert f'slony_migrate_status{{cluster="replication"}} {code}' in text


def test_prometheus_label_values_are_escaped():
    text = st.prometheus([healthy(cluster='a"b\\c\nd')], LIMITS)
    assert 'cluster="a\\"b\\\\c\\nd"' in text


@pytest.mark.parametrize(
    "state, changes, code, words", STATES, ids=[s[0] for s in STATES]
)
def test_the_json_document_has_ok_and_errors(state, changes, code, words):
    doc = json.loads(json.dumps(st.as_document(healthy(**changes), LIMITS)))
    assert doc["ok"] is (code == st.OK) and doc["code"] == code
    assert bool(doc["errors"]) is (code != st.OK)
    assert doc["summary"].startswith(f"SLONY {st.LABELS[code]}")
    for key in ("cluster", "nodes", "origin", "subscription", "slons", "lag", "copy"):
        assert key in doc


def fake_status(monkeypatch, *reports):
    reports = list(reports)
    monkeypatch.setattr(st, "status", lambda s: reports.pop(0))
    monkeypatch.setattr(st.returned, "first_contact", lambda s, **kw: [])


@pytest.mark.parametrize("form", st.FORMATS)
def test_the_exit_code_is_non_zero_when_something_is_wrong_but_for_prometheus(
    monkeypatch, form
):
    for _, changes, code, _ in STATES:
        fake_status(monkeypatch, healthy(**changes))
        s = session()
        got = st.show_status(s, 0, form, LIMITS)
        want = {"check": code, "prometheus": 0}.get(form, int(code != st.OK))
        assert got == want, changes


def test_watch_with_json_prints_one_object_per_line(monkeypatch):
    fake_status(monkeypatch, healthy(), healthy(locked=["db01"]), healthy())
    sleeps = []

    def sleep(seconds):
        sleeps.append(seconds)
        if len(sleeps) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(st.time, "sleep", sleep)
    s = session()
    s.out = Output(io.StringIO(), tty=False)
    assert st.show_status(s, 2, "json", LIMITS) == 0  # the last one was healthy
    lines = s.out.stream.getvalue().splitlines()
    assert len(lines) == 3 and sleeps == [2, 2, 2]
    assert [json.loads(l)["ok"] for l in lines] == [True, False, True]


def test_every_cluster_at_once_in_each_format():
    shop = healthy(cluster="shop", database="shop", locked=["db01"])
    reports = [healthy(), shop]
    doc = json.loads(st.shown_all("db01", "db02", reports, "json", LIMITS))
    assert doc["ok"] is False and doc["code"] == st.CRITICAL
    assert [d["cluster"] for d in doc["clusters"]] == ["replication", "shop"]
    assert doc["errors"] == [
        "shop: set 1 locked on db01: application writes refused;"
        " inv switchover (or switchback) unlocks it"
    ]
    line = st.shown_all("db01", "db02", reports, "check", LIMITS)
    assert line.startswith("SLONY CRITICAL - replication OK") and "\n" not in line
    text = st.shown_all("db01", "db02", reports, "prometheus", LIMITS)
    helps = [l for l in text.splitlines() if l.startswith("# HELP ")]
    assert len(helps) == len(set(helps))  # one family per metric, both clusters in it
    assert 'slony_migrate_status{cluster="shop"} 2' in text
    assert 'slony_migrate_status{cluster="replication"} 0' in text
