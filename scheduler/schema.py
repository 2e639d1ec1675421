"""The scheduler's SQLite schema, as the ordered list of migrations that build it.

A new table or column is a new entry at the end; an entry that has shipped is
never edited, so every database reaches the same schema.
"""

from __future__ import annotations

#: Ordered migrations; ``PRAGMA user_version`` says how many have run.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE users (
        name TEXT PRIMARY KEY,
        key_hash BLOB NOT NULL,
        email TEXT,
        admin INTEGER NOT NULL DEFAULT 0,
        created REAL NOT NULL
    );
    CREATE TABLE clusters (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        owner TEXT NOT NULL,
        created REAL NOT NULL,
        submit_file TEXT,
        submitted REAL
    );
    CREATE TABLE jobs (
        cluster INTEGER NOT NULL,
        proc INTEGER NOT NULL,
        owner TEXT NOT NULL,
        state TEXT NOT NULL,
        spec TEXT NOT NULL,
        submit_time REAL NOT NULL,
        start_time REAL,
        end_time REAL,
        worker TEXT,
        attempt INTEGER NOT NULL DEFAULT 0,
        num_starts INTEGER NOT NULL DEFAULT 0,
        exit_code INTEGER,
        exit_signal INTEGER,
        wall_time REAL,
        cpu_time REAL,
        hold_reason TEXT,
        output_files TEXT NOT NULL DEFAULT '[]',
        PRIMARY KEY (cluster, proc)
    );
    CREATE INDEX jobs_state ON jobs (state);
    CREATE INDEX jobs_owner ON jobs (owner);
    CREATE TABLE job_events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        cluster INTEGER NOT NULL,
        proc INTEGER NOT NULL,
        time REAL NOT NULL,
        event TEXT NOT NULL,
        detail TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX job_events_job ON job_events (cluster, proc);
    CREATE TABLE workers (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL UNIQUE,
        first_seen REAL NOT NULL,
        last_seen REAL NOT NULL
    );
    """,
    """
    CREATE TABLE job_files (
        cluster INTEGER NOT NULL,
        proc INTEGER NOT NULL,
        name TEXT NOT NULL,
        data BLOB NOT NULL,
        PRIMARY KEY (cluster, proc, name)
    );
    """,
    """
    CREATE TABLE mail (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        cluster INTEGER NOT NULL,
        proc INTEGER,
        owner TEXT NOT NULL,
        reason TEXT NOT NULL,
        recipient TEXT NOT NULL,
        message BLOB NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        created REAL NOT NULL,
        next_try REAL NOT NULL,
        sent REAL,
        error TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX mail_cluster ON mail (cluster, proc);
    CREATE INDEX mail_state ON mail (state);
    """,
    """
    CREATE TABLE expired (
        cluster INTEGER NOT NULL,
        proc INTEGER NOT NULL,
        time REAL NOT NULL,
        PRIMARY KEY (cluster, proc)
    );
    CREATE INDEX jobs_end_time ON jobs (end_time);
    """,
    """
    CREATE TABLE job_results (
        cluster INTEGER NOT NULL,
        proc INTEGER NOT NULL,
        value TEXT,
        error TEXT,
        time REAL NOT NULL,
        PRIMARY KEY (cluster, proc)
    );
    """,
    # fair share: each user's decayed usage (cpu-seconds) as of a time
    """
    CREATE TABLE usage (
        user TEXT PRIMARY KEY,
        value REAL NOT NULL,
        stamp REAL NOT NULL
    );
    """,
    # web passwords (scheduler/web/passwords.py): valid while the token they were set
    # under (key_hash) is the user's
    """
    CREATE TABLE web_passwords (
        name TEXT PRIMARY KEY,
        key_hash BLOB NOT NULL,
        salt BLOB NOT NULL,
        hash BLOB NOT NULL,
        time REAL NOT NULL
    );
    """,
    # the SHA-256 of each result file kept in the spool, recorded when the job's
    # result is taken and checked when the file is fetched (scheduler/result_hashes.py)
    """
    CREATE TABLE result_hashes (
        cluster INTEGER NOT NULL,
        proc INTEGER NOT NULL,
        name TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        size INTEGER NOT NULL,
        PRIMARY KEY (cluster, proc, name)
    );
    """,
]
