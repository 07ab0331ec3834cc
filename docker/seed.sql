-- Demo data for the testbed: the runbook's Django site `shotserver04`, owned by `johann`.
-- psql variable size_mb sets the size (auth_message carries most of it).
\set ON_ERROR_STOP 1
CREATE ROLE johann LOGIN CREATEDB;
CREATE DATABASE shotserver04 OWNER johann ENCODING 'UTF8' TEMPLATE template0;
\connect shotserver04
SET ROLE johann;
SELECT greatest(1, :size_mb) AS mb \gset

CREATE TABLE auth_user (
    id serial PRIMARY KEY,
    username varchar(30) NOT NULL UNIQUE,
    first_name varchar(30) NOT NULL DEFAULT '',
    last_name varchar(30) NOT NULL DEFAULT '',
    email varchar(75) NOT NULL,
    password varchar(128) NOT NULL,
    is_staff boolean NOT NULL DEFAULT false,
    is_active boolean NOT NULL DEFAULT true,
    is_superuser boolean NOT NULL DEFAULT false,
    last_login timestamptz NOT NULL DEFAULT now(),
    date_joined timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE auth_group (id serial PRIMARY KEY, name varchar(80) NOT NULL UNIQUE);
CREATE TABLE auth_permission (
    id serial PRIMARY KEY, name varchar(50) NOT NULL, codename varchar(100) NOT NULL UNIQUE);
CREATE TABLE auth_group_permissions (
    id serial PRIMARY KEY,
    group_id integer NOT NULL,
    permission_id integer NOT NULL,
    UNIQUE (group_id, permission_id)
);
CREATE TABLE auth_message (
    id serial PRIMARY KEY,
    user_id integer NOT NULL,
    message text NOT NULL
);
CREATE TABLE websites_domain (id serial PRIMARY KEY, name varchar(100) NOT NULL UNIQUE);
CREATE TABLE websites_website (
    id serial PRIMARY KEY,
    domain_id integer NOT NULL,
    subdomain varchar(100) NOT NULL,
    user_id integer,
    created timestamptz NOT NULL DEFAULT now(),
    UNIQUE (domain_id, subdomain)
);
-- No primary key, but a unique index on NOT NULL columns: Slony uses it as the key.
CREATE TABLE websites_alias (
    website_id integer NOT NULL,
    alias varchar(100) NOT NULL,
    CONSTRAINT websites_alias_key UNIQUE (website_id, alias)
);
-- A sequence owned by no column (numbers screenshots across tables).
CREATE SEQUENCE shot_number_seq;

INSERT INTO auth_user (username, email, password, is_staff, date_joined)
SELECT 'user' || i, 'user' || i || '@example.org', 'sha1$' || md5(i::text), i % 50 = 0,
       now() - (i || ' minutes')::interval
  FROM generate_series(1, 500 * :mb) i;
INSERT INTO auth_group (name) SELECT 'group' || i FROM generate_series(1, 20) i;
INSERT INTO auth_permission (name, codename) SELECT 'Can do ' || i, 'do_' || i FROM generate_series(1, 60) i;
INSERT INTO auth_group_permissions (group_id, permission_id)
SELECT g, p FROM generate_series(1, 20) g, generate_series(1, 60) p WHERE (g + p) % 3 = 0;
INSERT INTO websites_domain (name) SELECT 'domain' || i || '.example' FROM generate_series(1, 50) i;
INSERT INTO websites_website (domain_id, subdomain, user_id)
SELECT 1 + i % 50, 'www' || i, 1 + i % (500 * :mb) FROM generate_series(1, 200 * :mb) i;
INSERT INTO websites_alias (website_id, alias)
SELECT 1 + i % (200 * :mb), 'alias' || i FROM generate_series(1, 100 * :mb) i;
INSERT INTO auth_message (user_id, message)
SELECT 1 + i % (500 * :mb), repeat(md5(i::text), 4) FROM generate_series(1, 3800 * :mb) i;
SELECT setval('shot_number_seq', 1000 * :mb);
-- Keys and indexes after the load: one validation pass instead of a check per row.
CREATE INDEX auth_message_user_id ON auth_message (user_id);
ALTER TABLE auth_group_permissions ADD FOREIGN KEY (group_id) REFERENCES auth_group (id),
                                   ADD FOREIGN KEY (permission_id) REFERENCES auth_permission (id);
ALTER TABLE auth_message ADD FOREIGN KEY (user_id) REFERENCES auth_user (id);
ALTER TABLE websites_website ADD FOREIGN KEY (domain_id) REFERENCES websites_domain (id),
                             ADD FOREIGN KEY (user_id) REFERENCES auth_user (id);
ALTER TABLE websites_alias ADD FOREIGN KEY (website_id) REFERENCES websites_website (id);
ANALYZE;
