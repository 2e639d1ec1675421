"""The scheduler's SQLite schema, as the ordered list of migrations that build it.

A new table or column is a new entry at the end; an entry that has shipped is
never edited, so every database reaches the same schema. An entry is either SQL
(statements separated by ``;``) or a function given the database connection, for
a change SQL alone cannot make (such as computing new columns in Python); both
run inside the migration's one transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from scheduler.protocol.scram import make_verifier

#: A migration: SQL statements, or a function of the connection.
Migration = str | Callable[[sqlite3.Connection], None]

#: Pages of finished jobs read from where the page before ended, at the cost of the
#: page: in id order per state (:meth:`scheduler.store.Store.jobs_page`), and the most
#: recently ended first, everyone's or one owner's (:meth:`~scheduler.store.Store.history`).
PAGED_JOB_INDEXES = """
CREATE INDEX jobs_state_id ON jobs (state, cluster, proc);
CREATE INDEX jobs_ended ON jobs (end_time, cluster, proc);
CREATE INDEX jobs_owner_ended ON jobs (owner, end_time, cluster, proc);
"""

#: The ``job_checkpoints`` table: one row per job that stored a checkpoint or lost
#: run time to an eviction.
_job_checkpoints = """
    CREATE TABLE job_checkpoints (
        cluster INTEGER NOT NULL,
        proc INTEGER NOT NULL,
        count INTEGER NOT NULL DEFAULT 0,
        name TEXT,
        sha256 TEXT,
        size INTEGER,
        time REAL,
        wall_lost REAL NOT NULL DEFAULT 0,
        resumes INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (cluster, proc)
    );
"""


def _verifiers_instead_of_keys(db: sqlite3.Connection) -> None:
    """Users keep SCRAM verifiers instead of the hash of their token (which was their
    key: a reader of the database could log in as anyone). The hash is SCRAM's
    password input, so every token keeps working. Web passwords are re-keyed on the
    token's StoredKey (those set under an older token were void and are dropped).
    Workers get credentials of their own, kept as verifiers too."""
    db.execute(
        """CREATE TABLE users_new (
            name TEXT PRIMARY KEY,
            salt BLOB NOT NULL,
            iterations INTEGER NOT NULL,
            stored_key BLOB NOT NULL,
            server_key BLOB NOT NULL,
            email TEXT,
            admin INTEGER NOT NULL DEFAULT 0,
            created REAL NOT NULL
        )"""
    )
    stored: dict[bytes, bytes] = {}
    for name, key_hash, email, admin, created in db.execute(
        "SELECT name, key_hash, email, admin, created FROM users"
    ).fetchall():
        v = make_verifier(bytes(key_hash), iterations=4096)
        stored[bytes(key_hash)] = v.stored_key
        db.execute(
            "INSERT INTO users_new VALUES (?,?,?,?,?,?,?,?)",
            (name, v.salt, v.iterations, v.stored_key, v.server_key, email, admin, created),
        )
    db.execute(
        """CREATE TABLE web_passwords_new (
            name TEXT PRIMARY KEY,
            stored_key BLOB NOT NULL,
            salt BLOB NOT NULL,
            hash BLOB NOT NULL,
            time REAL NOT NULL
        )"""
    )
    for name, key_hash, salt, hash_, time in db.execute(
        "SELECT w.name, w.key_hash, w.salt, w.hash, w.time FROM web_passwords w"
        " JOIN users u ON u.name = w.name AND u.key_hash = w.key_hash"
    ).fetchall():
        db.execute(
            "INSERT INTO web_passwords_new VALUES (?,?,?,?,?)",
            (name, stored[bytes(key_hash)], salt, hash_, time),
        )
    for table in ("users", "web_passwords"):
        db.execute(f"DROP TABLE {table}")
        db.execute(f"ALTER TABLE {table}_new RENAME TO {table}")
    db.execute(
        """CREATE TABLE worker_credentials (
            name TEXT PRIMARY KEY,
            salt BLOB NOT NULL,
            iterations INTEGER NOT NULL,
            stored_key BLOB NOT NULL,
            server_key BLOB NOT NULL,
            created REAL NOT NULL
        )"""
    )


def _result_bytes(db: sqlite3.Connection) -> None:
    """The bytes of small results each owner keeps in ``job_files``, kept up by
    triggers, so that a submission's quota check reads one row instead of summing
    the owner's jobs (``scheduler/result_table.py``). A job's owner never changes,
    and its row is never deleted, so each file row finds its owner."""
    db.execute("CREATE TABLE result_bytes (owner TEXT PRIMARY KEY, bytes INTEGER NOT NULL)")
    db.execute(
        "INSERT INTO result_bytes (owner, bytes)"
        " SELECT j.owner, SUM(LENGTH(f.data)) FROM job_files f"
        " JOIN jobs j ON j.cluster = f.cluster AND j.proc = f.proc GROUP BY j.owner"
    )
    db.execute(
        """CREATE TRIGGER job_files_added AFTER INSERT ON job_files BEGIN
            INSERT INTO result_bytes (owner, bytes)
                SELECT owner, LENGTH(NEW.data) FROM jobs
                WHERE cluster = NEW.cluster AND proc = NEW.proc
                ON CONFLICT (owner) DO UPDATE SET bytes = bytes + excluded.bytes;
        END"""
    )
    db.execute(
        """CREATE TRIGGER job_files_removed AFTER DELETE ON job_files BEGIN
            UPDATE result_bytes SET bytes = bytes - LENGTH(OLD.data) WHERE owner =
                (SELECT owner FROM jobs WHERE cluster = OLD.cluster AND proc = OLD.proc);
        END"""
    )


#: Workflows (scheduler/dag_store.py): a DAG's id is a cluster reserved for it; each
#: node keeps its jobs' specs until its parents succeed, then they are queued as
#: the node's own cluster (procs from ``first_proc``, a retry's after the last).
_DAGS = """
CREATE TABLE dags (
    id INTEGER PRIMARY KEY,
    owner TEXT NOT NULL,
    name TEXT NOT NULL,
    state TEXT NOT NULL,
    created REAL NOT NULL,
    ended REAL,
    reason TEXT NOT NULL DEFAULT '',
    settings TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX dags_state ON dags (state);
CREATE TABLE dag_nodes (
    dag INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    name TEXT NOT NULL,
    cluster INTEGER,
    state TEXT NOT NULL,
    rules TEXT NOT NULL,
    submit_file TEXT NOT NULL DEFAULT '',
    specs TEXT NOT NULL DEFAULT '[]',
    attempt INTEGER NOT NULL DEFAULT 0,
    first_proc INTEGER NOT NULL DEFAULT 0,
    return_code INTEGER,
    reason TEXT NOT NULL DEFAULT '',
    started REAL,
    ended REAL,
    PRIMARY KEY (dag, seq)
);
CREATE INDEX dag_nodes_cluster ON dag_nodes (cluster);
CREATE TABLE dag_edges (
    dag INTEGER NOT NULL,
    parent INTEGER NOT NULL,
    child INTEGER NOT NULL
);
CREATE INDEX dag_edges_dag ON dag_edges (dag);
"""

WORKER_INCARNATION = """
ALTER TABLE workers ADD COLUMN incarnation TEXT NOT NULL DEFAULT '';
"""

RESULT_HASH_VERSIONS = """
ALTER TABLE result_hashes ADD COLUMN device INTEGER;
ALTER TABLE result_hashes ADD COLUMN inode INTEGER;
ALTER TABLE result_hashes ADD COLUMN mtime_ns INTEGER;
ALTER TABLE result_hashes ADD COLUMN ctime_ns INTEGER;
"""

#: Ordered migrations; ``PRAGMA user_version`` says how many have run.
MIGRATIONS: list[Migration] = [
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
    # SCRAM verifiers instead of token hashes; web passwords keyed on the StoredKey;
    # per-worker credentials
    _verifiers_instead_of_keys,
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
    # HTCondor's HoldReasonCode and HoldReasonSubCode of a job held by its policy
    # (scheduler/policies.py); NULL: derived from the hold reason
    """
    ALTER TABLE jobs ADD COLUMN hold_code INTEGER;
    ALTER TABLE jobs ADD COLUMN hold_subcode INTEGER;
    """,
    # the bytes of small results each owner keeps in job_files, kept up by triggers
    _result_bytes,
    # finished jobs read a page at a time: in id order (dq, /api/jobs), the most
    # recently ended first (dhistory, /api/history)
    PAGED_JOB_INDEXES,
    # self-checkpointing jobs: each job's latest checkpoint in the spool, how many it
    # stored, and the run time lost to evictions (scheduler/checkpoint_table.py)
    _job_checkpoints,
    # workflows: DAGs, their nodes (rules, jobs to queue, state) and edges
    # (scheduler/dag_store.py)
    _DAGS,
    # the worker process last registered under each name (scheduler/worker_handlers.py):
    # a process that comes back lists every attempt it was given since
    WORKER_INCARNATION,
    # the version (device, inode, size, times in ns) of each result file its hash was
    # taken from: a file still of that version is read in place without hashing it
    # again, after a restart too (scheduler/result_fds.py); NULL: none recorded
    RESULT_HASH_VERSIONS,
]
