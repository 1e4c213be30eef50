"""Composition root: settings → services → aiohttp app, plus the operator commands.

python app.py                      serve the bot (PORT, default 3978)
python app.py doctor               check a real tenant's configuration (exit 0 only when all pass)
python app.py audit verify [--head SEQ:HASH]   recompute the keyed audit chain (needs DATABASE_URL, AUDIT_KEY)
python app.py audit head           print the chain head SEQ:HASH to publish outside the database
python app.py audit export --since 2026-01-01 --format csv|jsonl
python app.py migrate              apply database migrations and exit

Installed (``pip install .``), the same CLI is the ``chromeos-deprovision-bot`` command (``[project.scripts]``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from aiohttp import web

from bot.logs import configure_logging
from bot.settings import AuditSettings, Settings, SettingsError, load_audit_settings, load_settings
from bot.tls import apply_ca_bundles

if TYPE_CHECKING:
    from bot.audit import Head
    from bot.store import Store

log = logging.getLogger("bot")


def configuration_errors(exc: SettingsError) -> SystemExit:
    print("Configuration errors (the bot did not start):", file=sys.stderr)
    for problem in exc.problems:
        print(f"  {problem}", file=sys.stderr)
    return SystemExit(2)


def settings_or_exit() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        raise configuration_errors(exc) from None


def audit_settings_or_exit() -> AuditSettings:
    """The ``audit`` commands read only DATABASE_URL, AUDIT_KEY and the log settings."""
    try:
        return load_audit_settings()
    except SettingsError as exc:
        raise configuration_errors(exc) from None


def serve(settings: Settings, *, checkpoint: Callable[[str], None] | None = None) -> None:
    from bot.runtime import build_app

    if settings.anonymous:
        log.warning(
            "ANONYMOUS Bot Framework mode (ALLOW_ANONYMOUS=true, no CONNECTIONS__SERVICE_CONNECTION__SETTINGS__CLIENTID): "
            "inbound requests are not authenticated and replies carry no token; listening on 127.0.0.1 only. "
            "Use this only on a local machine."
        )
    web.run_app(
        build_app(settings, checkpoint=checkpoint),
        host=settings.host,
        port=settings.port,
        shutdown_timeout=10,
        print=lambda _msg: None,
        access_log=None,
        handle_signals=True,
    )


def _fail(name: str, problem: object) -> int:
    """One line on stderr; exit code 2 (cannot be read or cannot go on)."""
    print(f"{name}: {problem}", file=sys.stderr)
    return 2


async def audit_command(settings: AuditSettings, args: argparse.Namespace) -> int:
    """``audit verify|head|export``: exit 0 when fine, 1 when the trail is tampered, 2 when it cannot be read."""
    from bot.audit import AuditLog, parse_head, sqlite_path
    from bot.store import Store

    name = f"audit {args.audit_command}"
    heads: list[Head] = []
    try:
        heads = [parse_head(text) for text in getattr(args, "head", None) or []]
    except ValueError as exc:
        return _fail(name, exc)
    url = settings.database_url
    path = sqlite_path(url)
    if url.startswith("sqlite") and (path is None or not path.is_file()):
        # Opening a SQLite URL creates the file: a trail that does not exist must not read as an empty, valid one.
        return _fail(name, f"no database at {path or url} — check DATABASE_URL")
    store = await Store.open(url, migrate=False)
    try:
        problem = await _revision_problem(store)
        if problem:
            return _fail(name, problem)
        if args.audit_command == "head":
            print(await AuditLog(store).head())
            return 0
        if args.audit_command == "verify":
            return await _audit_verify(settings, store, heads, name)
        try:
            sys.stdout.write(await AuditLog(store).export(args.format, args.since))
        except ValueError as exc:
            return _fail(name, exc)
        return 0
    finally:
        await store.close()


async def _revision_problem(store: Store) -> str | None:
    """Why the database cannot be read as this version's audit trail, if it cannot."""
    from bot.migrations import head_revision

    try:
        revision = await store.current_revision()
    except Exception as exc:
        return f"cannot open the database ({type(exc).__name__}: {exc}) — check DATABASE_URL"
    if revision is None:
        return "the database has no audit trail (never migrated) — check DATABASE_URL"
    if revision != head_revision():
        return f"the database is at revision {revision}, this version needs {head_revision()} — run `python app.py migrate`"
    return None


async def _audit_verify(settings: AuditSettings, store: Store, heads: list[Head], name: str) -> int:
    """Recompute the keyed chain: print the problems (at most 50) and a summary; 0 when intact, 1 when tampered."""
    from bot.audit import AuditKeyMissing, AuditLog, load_audit_key

    if settings.app_env == "production" and not settings.audit_key:
        return _fail(name, "AUDIT_KEY: required when APP_ENV=production")
    try:
        key = await asyncio.to_thread(load_audit_key, settings.audit_key, settings.database_url, create=False)
    except AuditKeyMissing as exc:
        return _fail(name, exc)
    result = await AuditLog(store, key).check(heads)
    shown = 50
    for problem in result.problems[:shown]:
        print(problem)
    if len(result.problems) > shown:
        print(f"… and {len(result.problems) - shown} more problem(s)")
    summary = f"{result.count} entries checked, head {result.head}"
    if result.unkeyed:
        summary += f" (the first {result.unkeyed} written before AUDIT_KEY existed)"
    if result.ok:
        print(f"audit trail OK: {summary}")
        return 0
    print(f"audit trail TAMPERED: {len(result.problems)} problem(s); {summary}")
    return 1


async def actions_command(settings: AuditSettings, args: argparse.Namespace) -> int:
    """``actions resolve <id> --done|--failed --note …``: an operator settles an unknown or unconfirmed write."""
    from bot.audit import Actor, AuditLog, load_audit_key
    from bot.store import CONFIRMED, FAILED, TRACKED_STATES, Store

    store = await Store.open(settings.database_url)
    try:
        action = await store.get(args.action_id)
        if action is None:
            print(f"actions resolve: no action {args.action_id!r}", file=sys.stderr)
            return 2
        if action.state not in TRACKED_STATES:
            print(
                f"actions resolve: the action is {action.state}; only sent or unknown actions can be resolved",
                file=sys.stderr,
            )
            return 2
        note = " ".join(args.note.split())[:500]
        now = time.time()
        if args.done:
            updated = await store.transition(
                action,
                CONFIRMED,
                next_check_at=None,
                intune_state="done",
                intune_detail=f"operator: {note}",
                settled_at=now,
            )
        else:
            updated = await store.transition(
                action,
                FAILED,
                next_check_at=None,
                intune_state="failed",
                settled_at=now,
                error_code="operator",
                error_message=note,
                retryable=False,
            )
        if updated is None:
            print("actions resolve: the action changed meanwhile; look again", file=sys.stderr)
            return 1
        key = await asyncio.to_thread(load_audit_key, settings.audit_key, settings.database_url)
        operator = Actor("operator", args.by or os.environ.get("USER", "operator"))
        await AuditLog(store, key).record(
            "resolved", actor=operator, action=action, outcome="done" if args.done else "failed", note=note
        )
        print(f"action {action.id}: {action.state} → {updated.state} ({note})")
        return 0
    finally:
        await store.close()


async def migrate_command(settings: Settings) -> int:
    from bot.audit import AuditLog, load_audit_key
    from bot.store import Store

    store = await Store.open(settings.database_url)
    try:
        print(f"database at revision {await store.current_revision()}")
        key = await asyncio.to_thread(load_audit_key, settings.audit_key, settings.database_url)
        sealed = await AuditLog(store, key).seal()
        if sealed is not None:
            print(f"audit trail: rows written before AUDIT_KEY existed sealed by keyed row {sealed}")
    finally:
        await store.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="ChromeOS deprovision bot for Microsoft Teams")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("serve", help="run the bot (default)")
    sub.add_parser("doctor", help="check the configured tenant, permissions, database and Bot Framework credentials")
    sub.add_parser("migrate", help="apply database migrations")
    audit = sub.add_parser("audit", help="audit trail tools")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    verify = audit_sub.add_parser("verify", help="recompute the keyed hash chain; exit 1 if tampered")
    verify.add_argument(
        "--head",
        action="append",
        metavar="SEQ:HASH",
        help="a head published earlier (audit log line or `audit head`); detects a trimmed or replaced chain",
    )
    audit_sub.add_parser("head", help="print the chain head SEQ:HASH (publish it outside the database)")
    export = audit_sub.add_parser("export", help="write audit events to stdout")
    export.add_argument("--since", help="ISO date or timestamp, e.g. 2026-11-01")
    export.add_argument("--format", choices=("csv", "jsonl"), default="jsonl")
    actions = sub.add_parser("actions", help="operator tools for actions")
    actions_sub = actions.add_subparsers(dest="actions_command", required=True)
    resolve = actions_sub.add_parser("resolve", help="settle an action whose outcome Intune did not report")
    resolve.add_argument("action_id")
    outcome = resolve.add_mutually_exclusive_group(required=True)
    outcome.add_argument("--done", action="store_true", help="Intune (admin center) shows it deprovisioned")
    outcome.add_argument("--failed", action="store_true", help="it was not carried out; frees the device")
    resolve.add_argument("--note", required=True, help="what you checked (audited)")
    resolve.add_argument("--by", help="your name for the audit trail (default: $USER)")
    args = parser.parse_args(argv)

    # Before any TLS client exists: a CA bundle named in .env / ENV_FILE must reach the Agents SDK's clients too.
    try:
        apply_ca_bundles(os.environ)
    except SettingsError as exc:
        raise configuration_errors(exc) from None
    if args.command == "doctor":
        from bot.doctor import run_doctor

        return asyncio.run(run_doctor())
    if args.command == "audit":
        audit_settings = audit_settings_or_exit()
        configure_logging(audit_settings.log_format, audit_settings.log_level, audit_settings.secrets())
        return asyncio.run(audit_command(audit_settings, args))
    if args.command == "actions":
        audit_settings = audit_settings_or_exit()
        configure_logging(audit_settings.log_format, audit_settings.log_level, audit_settings.secrets())
        return asyncio.run(actions_command(audit_settings, args))
    settings = settings_or_exit()
    configure_logging(settings.log_format, settings.log_level, settings.secrets())
    if args.command == "migrate":
        return asyncio.run(migrate_command(settings))
    serve(settings)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
