"""Issue 21, parts 2 and 3: every role the database's users log in as, the way they
were (memberships, settings, attributes, the database's own privileges), and what the
schema step cannot create on an empty server, named by preflight. Pure planning and
rendering, and the steps on fake hosts."""

from __future__ import annotations

import pytest

from fabfile import facts
from fabfile.checks import database as checks
from fabfile.checks.findings import FAIL, OK, WARN
from fabfile.errors import StepError
from fabfile.model import Membership, Role, make_cluster
from fabfile.render import roles as render
from fabfile.render.parse import dictionary_files
from fabfile.render.roles import Grant
from fabfile.render.sql import MASK, ROLE_MARK
from fabfile.steps import database, roles
from tests.unit.fakes import canned, output, session

CL = make_cluster("db01", "db02", name="crm", database="crm")
SCRAM = "SCRAM-SHA-256$4096:c2FsdA==$c3RvcmVk:c2VydmVy"

MASTER = {
    "postgres": Role("postgres", login=True, superuser=True),
    "slony": Role("slony", login=True, superuser=True, comment=ROLE_MARK),
    "crm_owner": Role("crm_owner", login=True, verifier=SCRAM + "o"),
    "crm_rw": Role("crm_rw"),
    "crm_ro": Role("crm_ro"),
    "staff": Role("staff"),
    "alice": Role(
        "alice",
        login=True,
        connlimit=10,
        valid_until="2099-01-01 00:00:00+00",
        verifier=SCRAM + "a",
    ),
    "bob": Role("bob", login=True, inherit=False, verifier="md5" + "0" * 32),
    "carol": Role("carol", login=True, bypassrls=True, verifier=SCRAM + "c"),
    "dba": Role("dba", login=True, superuser=True),
    "johann": Role("johann", login=True, verifier=SCRAM + "j"),
}
MEMBERS = [
    Membership("crm_rw", "alice"),
    Membership("staff", "alice"),
    Membership("crm_ro", "bob"),
    Membership("crm_rw", "carol", admin=True),
    Membership("pg_read_all_stats", "carol"),
    Membership("crm_rw", "slony"),
    Membership("pg_read_all_settings", "pg_monitor"),
]
NAMED = {
    "crm_owner": "owner, owner of the database",
    "crm_rw": "grantee",
    "crm_ro": "grantee, default privileges",
    "pg_database_owner": "grantee",
}
CONFIGS = [
    ("alice", "", "statement_timeout=5s"),
    ("alice", "crm", 'search_path="$user", crm'),
    ("alice", "other", "work_mem=1MB"),
    ("", "crm", "work_mem=8MB"),
]
SKIP = {"postgres", "slony"}


def plan(slave=None, slave_members=(), slave_configs=(), parameters=None, **kw):
    why = render.needed(kw.pop("named", NAMED), MEMBERS, SKIP)
    return roles.plan_roles(
        CL,
        why,
        MASTER,
        {"pg_read_all_stats": Role("pg_read_all_stats"), **(slave or {})},
        MEMBERS,
        list(slave_members),
        kw.pop("configs", CONFIGS),
        list(slave_configs),
        parameters
        if parameters is not None
        else {"statement_timeout", "work_mem", "search_path"},
        SKIP,
    )


# --- which roles ----------------------------------------------------------------------


def test_needed_reaches_login_roles_through_their_groups_and_groups_of_members():
    why = render.needed(NAMED, MEMBERS, SKIP)
    assert (
        why
        == {
            "alice": ["member of crm_rw"],
            "bob": ["member of crm_ro"],
            "carol": ["member of crm_rw"],
            "crm_owner": ["owner, owner of the database"],
            "crm_ro": ["grantee, default privileges"],
            "crm_rw": ["grantee"],
            "staff": ["group of alice"],
        }
    )  # not slony (a replication role), not pg_*, not johann or dba (nothing names them)


def test_memberships_in_scope_leave_the_replication_role_out():
    inside = render.in_scope(MEMBERS, {"alice", "bob", "carol", "crm_rw"}, SKIP)
    assert ("crm_rw", "slony") not in {(m.group, m.member) for m in inside}
    assert Membership("pg_read_all_stats", "carol") in inside


# --- the plan -------------------------------------------------------------------------


def test_a_fresh_server_gets_every_role_membership_and_setting():
    p = plan()
    assert [r.name for r in p.create] == [
        "alice",
        "bob",
        "carol",
        "crm_owner",
        "crm_ro",
        "crm_rw",
        "staff",
    ]
    assert {(m.group, m.member) for m in p.grants} == {
        ("crm_rw", "alice"),
        ("staff", "alice"),
        ("crm_ro", "bob"),
        ("crm_rw", "carol"),
        ("pg_read_all_stats", "carol"),
    }
    assert p.configs == [
        ("alice", "", "statement_timeout=5s"),
        ("alice", "crm", 'search_path="$user", crm'),
    ]  # another database's setting is that database's business
    assert p.md5 == ["bob"] and p.unnamed == ["johann"]
    assert not p.refused and not p.differ and not p.unknown


def test_a_role_there_as_on_the_master_gets_what_it_lacks_only():
    p = plan(
        slave={"alice": MASTER["alice"], "crm_rw": MASTER["crm_rw"]},
        slave_members=[Membership("crm_rw", "alice")],
        slave_configs=[("alice", "", "statement_timeout=5s")],
    )
    assert "alice" in p.same and "alice" not in [r.name for r in p.create]
    assert ("crm_rw", "alice") not in {(m.group, m.member) for m in p.grants}
    assert ("staff", "alice") in {(m.group, m.member) for m in p.grants}
    assert p.configs == [("alice", "crm", 'search_path="$user", crm')]


def test_a_role_there_otherwise_is_named_and_held():
    other = Role("alice", login=True, connlimit=3, verifier=SCRAM + "x")
    p = plan(
        slave={"alice": other},
        slave_configs=[("alice", "", "statement_timeout=7s")],
    )
    assert p.differ["alice"] == [
        "CONNECTION LIMIT 3 (master: 10)",
        "VALID UNTIL none (master: 2099-01-01 00:00:00+00)",
        "another stored password (or the same password stored anew)",
    ]
    assert {(m.group, m.member) for m in p.held_grants} == {
        ("crm_rw", "alice"),
        ("staff", "alice"),
    }
    assert ("alice", "", "statement_timeout=5s") in p.held_configs
    assert ("alice", "crm", 'search_path="$user", crm') in p.held_configs


def test_a_membership_the_new_server_has_beyond_the_masters_is_named(monkeypatch):
    p = plan(
        slave={"bob": MASTER["bob"], "crm_ro": MASTER["crm_ro"]},
        slave_members=[Membership("crm_ro", "bob"), Membership("admins", "bob")],
    )
    assert p.differ == {"bob": ["also bob in admins"]}
    assert p.revokes == [Membership("admins", "bob")]
    s = session(dry_run=True, name="crm", database="crm")
    out = [c.what for c in roles.role_changes(s, "appdb", p, update_roles=True)]
    assert "revoke membership bob in admins (not on db01; --update-roles)" in out
    assert not any("revoke" in c.what for c in roles.role_changes(s, "appdb", p, False))


def test_superusers_and_replication_roles_are_refused_unless_there():
    named = {**NAMED, "dba": "owner"}
    p = plan(named=named)
    assert p.refused == {"dba": "a superuser"}
    assert plan(named=named, slave={"dba": MASTER["dba"]}).refused == {}


def test_a_setting_the_new_server_does_not_know_is_named():
    p = plan(parameters={"work_mem"})
    assert ("alice", "", "statement_timeout=5s") in p.unknown
    assert plan(
        configs=[("alice", "", "myapp.tenant=7")], parameters=set()
    ).configs == [("alice", "", "myapp.tenant=7")]  # a custom one is fine


def test_no_expiry_and_infinity_are_alike():
    assert Role("r", valid_until="").same(Role("r", valid_until="infinity"))


# --- rendering ------------------------------------------------------------------------


def test_create_role_carries_every_attribute_and_masks_the_password():
    text = render.create_role(MASTER["alice"], 170000)
    assert text.startswith("SET log_statement = 'none'")
    assert (
        'CREATE ROLE "alice" WITH NOSUPERUSER LOGIN NOCREATEDB NOCREATEROLE INHERIT'
        " NOREPLICATION NOBYPASSRLS CONNECTION LIMIT 10 VALID UNTIL '2099-01-01"
        f" 00:00:00+00' PASSWORD '{MASK}';" in text
    )
    assert SCRAM not in text
    assert "BYPASSRLS" in render.create_role(MASTER["carol"], 170000)
    assert "BYPASSRLS" not in render.create_role(MASTER["carol"], 90400)
    assert "VALID UNTIL" not in render.create_role(MASTER["crm_rw"], 170000)


def test_alter_role_never_touches_superuser_or_replication():
    text = render.alter_role(MASTER["crm_rw"], 170000)
    assert "SUPERUSER" not in text and "REPLICATION" not in text
    assert "VALID UNTIL 'infinity'" in text and "PASSWORD NULL" in text


def test_memberships_keep_their_options_by_server_version():
    m = Membership("crm_rw", "carol", admin=True)
    assert render.grant_membership(m, 150000, True) == (
        'GRANT "crm_rw" TO "carol" WITH ADMIN OPTION'
    )
    assert render.grant_membership(m, 170000, False) == (
        'GRANT "crm_rw" TO "carol" WITH ADMIN TRUE, INHERIT FALSE, SET TRUE'
    )
    new = Membership("g", "m", inherit=True, set=False)
    assert render.grant_membership(new, 170000, False).endswith(
        "INHERIT TRUE, SET FALSE"
    )
    assert render.membership_words(new) == "m in g (NOSET)"


def test_settings_as_pg_dump_writes_them():
    assert render.set_config("alice", "", "statement_timeout=5s") == (
        "ALTER ROLE \"alice\" SET statement_timeout = '5s'"
    )
    assert render.set_config("alice", "crm", 'search_path="$user", crm') == (
        "ALTER ROLE \"alice\" IN DATABASE \"crm\" SET search_path = '$user', 'crm'"
    )
    assert render.set_config("", "crm", "work_mem=8MB") == (
        "ALTER DATABASE \"crm\" SET work_mem = '8MB'"
    )
    assert render.list_items('"a,b", "c""d", e') == ["a,b", 'c"d', "e"]
    assert render.set_config("r", "", "application_name=o'brien").endswith("'o''brien'")
    with pytest.raises(ValueError):
        render.set_config("r", "", "x; DROP TABLE t=1")


def test_database_privileges_are_made_equal_while_shaping_else_only_added():
    want = {Grant("crm_owner", "CONNECT"), Grant("crm_rw", "CONNECT", True)}
    have = roles.default_grants("crm_owner")
    full = render.database_grants("crm", want, have, revoke=True)
    assert 'REVOKE CONNECT ON DATABASE "crm" FROM PUBLIC' in full
    assert 'REVOKE TEMPORARY ON DATABASE "crm" FROM PUBLIC' in full
    assert 'GRANT CONNECT ON DATABASE "crm" TO "crm_rw" WITH GRANT OPTION' in full
    only = render.database_grants("crm", want, have, revoke=False)
    assert only == ['GRANT CONNECT ON DATABASE "crm" TO "crm_rw" WITH GRANT OPTION']
    option = render.database_grants(
        "crm", {Grant("a", "CONNECT")}, {Grant("a", "CONNECT", True)}, revoke=True
    )
    assert option == ['REVOKE GRANT OPTION FOR CONNECT ON DATABASE "crm" FROM "a"']


# --- appdb on fake hosts --------------------------------------------------------------


def appdb_facts(monkeypatch, slave_roles=None, slave_db=None):
    info = {"owner": "crm_owner", "encoding": "UTF8", "collate": "C", "ctype": "C"}

    def roles_of(host, names=None):
        every = MASTER if host.name == "db01" else (slave_roles or {})
        return {n: r for n, r in every.items() if names is None or n in names}

    monkeypatch.setattr(facts, "roles", roles_of)
    canned(
        monkeypatch,
        database_exists=True,
        require_database=None,
        database_info={"db01": info, "db02": slave_db},
        bootstrap_superuser="postgres",
        memberships={"db01": MEMBERS, "db02": []},
        named_roles=NAMED,
        role_configs={"db01": CONFIGS, "db02": []},
        parameters={"statement_timeout", "work_mem", "search_path"},
        database_grants={
            "db01": {Grant("crm_owner", "CONNECT"), Grant("crm_rw", "CONNECT")},
            "db02": set(),
        },
        database_comment={"db01": "the CRM", "db02": ""},
    )


def test_appdb_dry_run_shows_roles_then_database_then_what_needs_it(monkeypatch):
    s = session(dry_run=True, name="crm", database="crm")
    appdb_facts(monkeypatch)
    database.appdb(s)
    out = output(s)
    order = [
        "would create role alice as on db01 (member of crm_rw)",
        "would grant membership alice in crm_rw",
        "would set statement_timeout=5s (role alice) as on db01",
        "would create database crm (owner crm_owner, UTF8, C)",
        'would set search_path="$user", crm (role alice in crm) as on db01',
        "would set privileges on database crm as on db01",
        "would set work_mem=8MB for database crm as on db01",
        "would set the comment on database crm as on db01",
    ]
    at = [out.index(line) for line in order]
    assert at == sorted(at), out
    assert 'REVOKE CONNECT ON DATABASE "crm" FROM PUBLIC' in out
    assert "COMMENT ON DATABASE \"crm\" IS 'the CRM'" in out
    assert SCRAM not in out and f"PASSWORD '{MASK}'" in out
    assert "slony" not in out.replace("slony-migrate", "")
    assert s.hosts["db02"].commands == []


def test_appdb_sends_the_verifier_and_refuses_a_superuser_first(monkeypatch):
    s = session(name="crm", database="crm")
    appdb_facts(monkeypatch)
    monkeypatch.setattr(
        facts, "named_roles", lambda h, cl: {**NAMED, "dba": "owner of a function"}
    )
    with pytest.raises(StepError) as e:
        database.appdb(s)
    assert "dba (a superuser on db01; owner of a function)" in e.value.message
    assert "by hand" in e.value.fix
    assert s.hosts["db02"].commands == []


def test_appdb_leaves_a_role_that_differs_unless_asked(monkeypatch):
    other = {"alice": Role("alice", login=True, verifier=SCRAM + "x")}
    for update in (False, True):
        s = session(dry_run=True, name="crm", database="crm")
        appdb_facts(monkeypatch, slave_roles=other)
        database.appdb(s, update_roles=update)
        out = output(s)
        if update:
            assert "would update role alice as on db01 (--update-roles)" in out
            assert "would grant membership alice in staff" in out
        else:
            assert "role alice exists with CONNECTION LIMIT -1 (master: 10)" in out
            assert "left as it is (--update-roles makes it as on db01" in out
            assert "would grant membership alice in" not in out
            assert "membership(s) of roles that differ here, left out" in out


# --- preflight ------------------------------------------------------------------------


def findings(gen):
    return [(f.level, f.object, f.message) for f in gen]


def test_preflight_names_each_role_with_why_and_each_refusal(monkeypatch):
    s = session(name="crm", database="crm")
    appdb_facts(monkeypatch)
    monkeypatch.setattr(facts, "named_roles", lambda h, cl: {**NAMED, "dba": "owner"})
    found = findings(checks.roles(s))
    assert (OK, "role staff", "appdb creates it as on db01 (group of alice)") in found
    assert any(f[0] == FAIL and f[1] == "role dba" for f in found)
    assert any(f[0] == WARN and f[1] == "role bob" and "md5" in f[2] for f in found)
    assert any(f[0] == WARN and f[1] == "login roles" for f in found)


def test_preflight_names_what_the_schema_step_cannot_create(monkeypatch):
    s = session()
    canned(
        monkeypatch,
        tablespace_names={"pg_default", "pg_global"},
        tablespaces_used={"fast": ["table public.hot", "index public.hot_pkey"]},
        collation_names={'pg_catalog."C"'},
        collations_used={
            'public."de-x"': ("c", "de_DE.UTF-8", "defined here"),
            'pg_catalog."fr_FR"': ("c", "fr_FR.UTF-8", "column public.t.name"),
        },
        has_locale=False,
        ts_dictionaries=[
            ("public.en_hunspell", "ispell", "dictfile = 'en_us', afffile = 'en_us'")
        ],
        pg_dir="/usr/share/postgresql/17",
        missing_files=["/usr/share/postgresql/17/tsearch_data/en_us.dict"],
        event_triggers=[
            ("audit_ddl", "ddl_command_end", True, "public.audit() (owned by johann)"),
            ("off", "sql_drop", False, "public.f() (owned by johann)"),
        ],
    )
    found = findings(checks.restorable(s))
    levels = {obj: level for level, obj, _ in found}
    assert levels == {
        "tablespace fast": FAIL,
        'collation public."de-x"': FAIL,
        'collation pg_catalog."fr_FR"': FAIL,
        "text search dictionary public.en_hunspell": FAIL,
        "event trigger audit_ddl": FAIL,
        "event trigger off": OK,
    }
    fixes = " ".join(f.fix for f in checks.restorable(s))
    assert (
        "CREATE TABLESPACE fast" in fixes and "ALTER EVENT TRIGGER audit_ddl" in fixes
    )


def test_dictionary_files_follow_postgresqls_names():
    assert dictionary_files(
        "ispell", "dictfile = 'en_us', afffile = 'en_us', stopwords = 'english'"
    ) == ["en_us.dict", "en_us.affix", "english.stop"]
    assert dictionary_files("thesaurus", "dictfile = 'thes', dictionary = 'x'") == [
        "thes.ths"
    ]
    assert dictionary_files("synonym", "synonyms = 'syn'") == ["syn.syn"]
