"""An application-like writer, run on the testbed's `app` host: one psycopg2 connection
to PgBouncer, as a Python application keeps it, inserting numbered rows at a steady
rate. Every attempt is one JSON line on stdout: start and end (wall clock), the number,
acknowledged or the error. It reconnects after an error, as an application's pool would.
Bounded in count and time; it also stops when the stop file appears. Standalone (the
standard library and psycopg2): it is copied to the host and run there.

    python3 appwriter.py DSN TABLE TAG RATE MAX_COUNT MAX_SECONDS STOPFILE
"""

import json
import os
import sys
import time

import psycopg2


def connect(dsn):
    conn = psycopg2.connect(dsn, connect_timeout=10)
    conn.autocommit = True
    return conn


def main(dsn, table, tag, rate, max_count, max_seconds, stopfile):
    rate, max_count, max_seconds = float(rate), int(max_count), float(max_seconds)
    deadline = time.time() + max_seconds
    conn = None
    for i in range(1, max_count + 1):
        if time.time() > deadline or os.path.exists(stopfile):
            break
        t0 = time.time()
        error = ""
        try:
            if conn is None:
                conn = connect(dsn)
            with conn.cursor() as cur:
                cur.execute(
                    f"INSERT INTO {table} (user_id, message) VALUES (1, %s)",
                    (f"{tag} {i}",),
                )
        except psycopg2.Error as e:
            error = " ".join(str(e).split()) or type(e).__name__
            try:
                if conn is not None:
                    conn.close()
            except psycopg2.Error:
                pass
            conn = None
        print(
            json.dumps(
                {
                    "start": t0,
                    "end": time.time(),
                    "id": i,
                    "ok": not error,
                    "error": error,
                }
            ),
            flush=True,
        )
        time.sleep(max(0.0, 1 / rate - (time.time() - t0)))
    if conn is not None:
        conn.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
