"""scheduler.toml and worker.toml: keys derived from the parsers, precedence flag >
environment > file > default, unknown keys and wrong types named with file and line,
`dfarm config show`, and the generated option reference."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from conftest import TestCluster, wait_until, write

from scheduler.config_reference import reference
from scheduler.node_setup import config_file

# pyftpdlib imports asyncore/asynchat, deprecated in Python 3.11: not ours to fix.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from scheduler.__main__ import build_parser as scheduler_parser
    from scheduler.__main__ import config_from_args
    from worker_node.__main__ import build_parser as worker_parser

REPO = Path(__file__).resolve().parent.parent


def test_precedence_flag_env_file_default(tmp_path: Path) -> None:
    toml = write(
        tmp_path / "scheduler.toml",
        'port = 7100\nftp_port = 2121\nworker_timeout = 60\nhost = "::"\n',
    )
    env = {"DFARM_FTP_PORT": "2200", "DFARM_WORKER_TIMEOUT": "45", "DFARM_CONFIG": str(toml)}
    args, sources = config_file.load(scheduler_parser(), ["--port", "7200"], "scheduler", env)
    assert (args.port, sources["port"].kind) == (7200, "flag")
    assert (args.ftp_port, sources["ftp_port"].kind) == (2200, "env")
    assert args.worker_timeout == 45.0
    assert str(sources["worker_timeout"]) == "env DFARM_WORKER_TIMEOUT"
    assert (args.host, str(sources["host"])) == ("::", f"file {toml}:4")
    assert (args.heartbeat_interval, sources["heartbeat_interval"].kind) == (5.0, "default")
    # --config beats $DFARM_CONFIG
    other = write(tmp_path / "other.toml", "port = 7300\n")
    args, _ = config_file.load(scheduler_parser(), ["--config", str(other)], "scheduler", {})
    assert args.port == 7300


def test_file_values_are_typed_like_the_options(tmp_path: Path) -> None:
    toml = write(
        tmp_path / "scheduler.toml",
        'home = "/srv/dfarm"\nftp_passive_ports = "40000-40009"\nsmtp_security = "tls"\n'
        'smtp_host = "mail.example.org"\nmasquerade_address = "203.0.113.7"\nkeep_results = 2\n',
    )
    args, _ = config_file.load(scheduler_parser(), ["--config", str(toml)], "scheduler", {})
    config = config_from_args(args)
    assert config.home == Path("/srv/dfarm")
    assert config.ftp_passive_ports == range(40000, 40010)
    assert config.masquerade_address == "203.0.113.7"
    assert config.result_retention == 2 * 86400
    assert config.mail is not None and config.mail.security == "tls"
    worker = write(tmp_path / "worker.toml", 'slots = 4\nmemory = "2GB"\ngrace = 10\n')
    args, _ = config_file.load(worker_parser(), ["--config", str(worker)], "worker", {})
    assert (args.slots, args.memory, args.grace) == (4, "2GB", 10.0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("port = 7070\nprot = 7071\n", "scheduler.toml:2: unknown key 'prot' for dfarm scheduler; "
         "did you mean 'port'?"),
        ("port = \"high\"\n", "scheduler.toml:1: key 'port': expected an integer, got 'high'"),
        ("port = 7070.5\n", "scheduler.toml:1: key 'port': expected an integer"),
        ("host = 7\n", "scheduler.toml:1: key 'host': expected a string, got 7"),
        ("smtp_security = \"ssl\"\n", "key 'smtp_security': 'ssl' is not one of none, starttls"),
        ("ftp_passive_ports = \"a-b\"\n", "key 'ftp_passive_ports': a port range is FIRST-LAST"),
        ("[mail]\nhost = 1\n", "unknown key 'mail'"),
        ("port = \n", "scheduler.toml: not valid TOML"),
    ],
)  # fmt: skip
def test_bad_files_are_named_with_line_and_key(tmp_path: Path, text: str, message: str) -> None:
    toml = write(tmp_path / "scheduler.toml", text)
    with pytest.raises(config_file.ConfigError) as info:
        config_file.load(scheduler_parser(), ["--config", str(toml)], "scheduler", {})
    assert message in str(info.value)
    assert str(toml) in str(info.value)


def test_bad_environment_values_are_named() -> None:
    with pytest.raises(config_file.ConfigError, match=r"\$DFARM_SLOTS: expected an integer"):
        config_file.load(worker_parser(), [], "worker", {"DFARM_SLOTS": "many"})


def test_booleans_lists_and_secrets_from_any_parser() -> None:
    """Options added to a parser elsewhere become keys with no other change."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--tls", action="store_true")
    parser.add_argument("--allow-user", action="append")
    parser.add_argument("--db-password")
    parser.add_argument("--key-file", type=Path)
    env = {"DFARM_TLS": "yes", "DFARM_DB_PASSWORD": "hunter2", "DFARM_KEY_FILE": "/k"}
    args, sources = config_file.load(parser, ["--allow-user", "bob"], "test", env)
    assert args.tls is True and args.allow_user == ["bob"] and sources["allow_user"].kind == "flag"
    shown = {k: v for k, v, _ in config_file.effective(parser, args, sources)}
    assert shown["db_password"] == "********" and shown["key_file"] == Path("/k")
    with pytest.raises(config_file.ConfigError, match="expected true or false"):
        config_file.load(parser, [], "test", {"DFARM_TLS": "maybe"})
    required = argparse.ArgumentParser()
    required.add_argument("--site", required=True)
    args, sources = config_file.load(required, [], "test", {"DFARM_SITE": "north"})
    assert args.site == "north" and sources["site"].kind == "env"


def test_warm_map_is_on_unless_turned_off(tmp_path: Path) -> None:
    args, _ = config_file.load(worker_parser(), [], "worker", {})
    assert args.warm_map is True
    args, _ = config_file.load(worker_parser(), ["--no-warm-map"], "worker", {})
    assert args.warm_map is False
    toml = write(tmp_path / "worker.toml", "warm_map = false\n")
    args, _ = config_file.load(worker_parser(), ["--config", str(toml)], "worker", {})
    assert args.warm_map is False
    args, _ = config_file.load(worker_parser(), [], "worker", {"DFARM_WARM_MAP": "off"})
    assert args.warm_map is False


def dfarm(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "control_node.cli.dfarm", *args],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DFARM_")}
    env.update(extra)
    return env


def test_config_show_prints_values_and_sources(tmp_path: Path) -> None:
    toml = write(tmp_path / "worker.toml", 'scheduler = "sched:7070"\nslots = 3\n')
    env = clean_env(DFARM_NAME="node7")
    shown = dfarm("config", "show", "worker", "--config", str(toml), "--grace", "5", env=env)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert any(line.startswith('scheduler = "sched:7070"') and f"file {toml}:1" in line
               for line in lines)  # fmt: skip
    assert any(line.startswith('name = "node7"') and "env DFARM_NAME" in line for line in lines)
    assert any(line.startswith("grace = 5.0") and "# flag" in line for line in lines)
    assert any(line.startswith('log_level = "INFO"') and "# default" in line for line in lines)
    records = json.loads(dfarm("config", "show", "worker", "--json", env=env).stdout)
    assert {"key": "name", "value": "node7", "source": "env", "where": "DFARM_NAME"} in records
    bad = dfarm("config", "show", "worker", "--config", str(tmp_path / "nope.toml"), env=env)
    assert bad.returncode == 2 and "cannot read configuration file" in bad.stderr
    assert "Traceback" not in bad.stderr
    assert dfarm("config", "show", "nodes", env=env).returncode == 2
    both = json.loads(dfarm("config", "show", "--json", env=env).stdout)
    assert set(both) == {"scheduler", "worker"}
    assert {"key": "port", "value": 7070, "source": "default", "where": ""} in both["scheduler"]


def test_daemons_refuse_bad_files_in_words(tmp_path: Path) -> None:
    toml = write(tmp_path / "worker.toml", 'scheduler = "s:1"\nslotz = 2\n')
    out = subprocess.run(
        [sys.executable, "-m", "control_node.cli.dfarm", "worker", "--config", str(toml)],
        capture_output=True, text=True, timeout=60, env=clean_env(),
    )  # fmt: skip
    assert out.returncode == 2
    assert f"{toml}:2: unknown key 'slotz' for dfarm worker; did you mean 'slots'?" in out.stderr
    assert "Traceback" not in out.stderr


def test_nodes_run_from_their_files(make_cluster, tmp_path: Path) -> None:  # noqa: ANN001
    """A real scheduler and worker take their settings from files; flags still win."""
    sched = write(tmp_path / "scheduler.toml", 'ftp_passive_ports = "1-65535"\nkeep_results = 1\n')
    worker = write(tmp_path / "worker.toml", 'cpus = 3\nname = "from-file"\n')
    cluster: TestCluster = make_cluster(
        workers=1, scheduler_args=("--config", str(sched)), worker_args=("--config", str(worker))
    )
    out = cluster.run("dstat", "--json")
    assert out.returncode == 0, out.stderr
    (record,) = json.loads(out.stdout)
    assert (record["name"], record["cpus_total"]) == ("w1", 3)
    script = write(tmp_path / "job.sh", "#!/bin/sh\nwc -c < big.dat\n", executable=True)
    write(tmp_path / "big.dat", "x" * 200_000)  # beyond the inline limit: over FTP
    write(tmp_path / "job.sub", f"executable = {script}\ntransfer_input_files = big.dat\nqueue\n")
    done = cluster.run("dsub", "--wait", "--per-job", "job.sub", cwd=tmp_path)
    assert done.returncode == 0, done.stderr + cluster.log("scheduler")
    wait_until(lambda: (tmp_path / "1.0" / "stdout").exists(), what="results")
    assert (tmp_path / "1.0" / "stdout").read_text().strip() == "200000"


def test_reference_is_up_to_date() -> None:
    path = REPO / "docs" / "configuration-reference.md"
    assert path.read_text() == reference(), (
        "docs/configuration-reference.md is out of date: run "
        "'python -m scheduler.config_reference > docs/configuration-reference.md'"
    )
