"""The baseline the report compares against: the first committed ``bench/results.json`` (before the fixes).

That run (commit a7ee867, "Benchmarks: message and confirm turns vs an echo floor …") measured the bot *before* the
recommendations of its report were adopted in 7d33b84. :func:`load` reads it with ``git show <commit>:bench/results.json``
and keeps a condensed copy (no per-request latencies) that :mod:`bench.run` stores under ``results["baseline"]``, so a
regenerated report can show before → after without the old file, and ``results.json`` stays self-contained.
"""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import tarfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
#: the subject line the baseline commit starts with; the short hash is the fallback if the log cannot be searched
SUBJECT = "Benchmarks: message and confirm turns"
FALLBACK_COMMIT = "a7ee867"


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False).stdout


def find_commit() -> str | None:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        found = _git("log", "--format=%h", "--fixed-strings", f"--grep={SUBJECT}", "--", "bench/results.json").split()
        if found:
            return found[-1]  # the oldest such commit: the report written before any fix
        if _git("rev-parse", "--verify", "--quiet", f"{FALLBACK_COMMIT}^{{commit}}").strip():
            return FALLBACK_COMMIT
    return None


def condense(raw: dict[str, Any], commit: str) -> dict[str, Any]:
    """What the report needs from an old ``results.json``: summaries, targets, flows, tokens, memory, profile shares."""
    profile = {
        turn: {k: v for k, v in p.items() if k in ("loop_busy_share", "loop_busy_samples", "buckets")}
        for turn, p in (raw.get("profile") or {}).items()
    }
    flows = raw.get("flows") or {}
    return {
        "commit": commit,
        "started": (raw.get("meta") or {}).get("started"),
        "duration_s": (raw.get("meta") or {}).get("duration_s"),
        "load_average_at_start": (raw.get("meta") or {}).get("load_average_at_start"),
        "summary": raw.get("summary") or [],
        "targets": raw.get("targets") or [],
        "flows": {
            "cold": (flows.get("cold") or {}).get("round_trips"),
            "warm": [f.get("round_trips") for f in flows.get("warm") or []],
        },
        "tokens": raw.get("tokens") or {},
        "memory": raw.get("memory") or {},
        "startup": {k: v for k, v in (raw.get("startup") or {}).items() if k in ("median_s", "runs_s")},
        "bot_process": raw.get("bot_process") or {},
        "sdk_warnings_logged": raw.get("sdk_warnings_logged"),
        "profile": profile,
        "http_clients": raw.get("http_clients") or {},
    }


def load() -> dict[str, Any] | None:
    """The condensed baseline, or ``None`` outside a git checkout (the report then shows no before column)."""
    commit = find_commit()
    if commit is None:
        return None
    with contextlib.suppress(OSError, subprocess.SubprocessError, ValueError):
        text = _git("show", f"{commit}:bench/results.json")
        if text:
            return condense(json.loads(text), commit)
    return None


def extract_tree(commit: str, dest: Path) -> Path | None:
    """The baseline commit's source tree (``git archive``) in ``dest``, to run its own bot side by side."""
    with contextlib.suppress(OSError, subprocess.SubprocessError, tarfile.TarError):
        archive = subprocess.run(["git", "archive", "--format=tar", commit], cwd=ROOT, capture_output=True, check=True)
        dest.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
            tar.extractall(dest, filter="data")
        if (dest / "bench" / "launcher.py").exists() and (dest / "bot").is_dir():
            return dest
    return None
