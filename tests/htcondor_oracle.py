"""HTCondor's own reading of submit text, from the ``htcondor`` 24 bindings (the
``htcondor`` test extra), run in a child process: condor_submit's code ends the process
on some errors (``$INT(x)`` of a non-number, a ``$CHOICE`` out of range).

``HTCONDOR`` says whether the bindings are installed; tests that compare with them
skip when they are not.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

__all__ = ["HTCONDOR", "ERROR", "condor_expand", "condor_jobs"]

HTCONDOR = importlib.util.find_spec("htcondor") is not None
#: What a key expands to when condor_submit stops on it with an error.
ERROR = "<error>"

_EXPAND = r"""
import json, sys, warnings
warnings.filterwarnings("ignore")
import htcondor
head, keys = json.loads(sys.stdin.readline()), json.loads(sys.stdin.readline())
for key in keys:
    print(json.dumps(key), flush=True)
    print(json.dumps(htcondor.Submit(head).expand(key)), flush=True)
"""

_JOBS = r"""
import json, sys, warnings
warnings.filterwarnings("ignore")
import htcondor
try:
    s = htcondor.Submit(sys.stdin.read())
    jobs = [{k: str(v) for k, v in ad.items()} for ad in s.jobs(clusterid=1)]
    items = [i if isinstance(i, str) else dict(i) for i in s.itemdata()]
    print(json.dumps({"jobs": jobs, "items": items}))
except Exception as e:
    print(json.dumps({"error": str(e)}))
"""


def _env(environ: dict[str, str] | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    env["CONDOR_CONFIG"] = "/dev/null"
    return {**env, **(environ or {})}


def condor_expand(
    head: str, keys: list[str], environ: dict[str, str] | None = None
) -> dict[str, str]:
    """What each key of ``head`` (submit text) expands to, or ``ERROR``."""
    out: dict[str, str] = {}
    todo = list(keys)
    while todo:
        done = subprocess.run(
            [sys.executable, "-c", _EXPAND],
            input=json.dumps(head) + "\n" + json.dumps(todo) + "\n",
            capture_output=True, text=True, env=_env(environ), timeout=120,
        )  # fmt: skip
        lines = done.stdout.splitlines()
        for key_line, value_line in zip(lines[::2], lines[1::2], strict=False):
            out[json.loads(key_line)] = json.loads(value_line)
        if len(lines) % 2:  # the process stopped on this key
            out[json.loads(lines[-1])] = ERROR
        elif done.returncode != 0:
            out[todo[len(lines) // 2]] = ERROR
        todo = [k for k in todo if k not in out]
    return out


def condor_jobs(text: str, cwd: str, environ: dict[str, str] | None = None) -> dict:
    """``{"jobs": [ad, ...], "items": [...]}`` (ads as str -> str), or ``{"error": ...}``."""
    done = subprocess.run(
        [sys.executable, "-c", _JOBS], input=text, capture_output=True, text=True,
        cwd=cwd, env=_env(environ), timeout=120,
    )  # fmt: skip
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        return {"error": (done.stderr.strip().splitlines() or ["no output"])[-1]}
    result: dict = json.loads(lines[-1])
    return result
