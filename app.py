"""Composition root: settings → services → aiohttp app, plus the operator commands.

python app.py                      serve the bot (PORT, default 3978)
python app.py doctor               check a real tenant's configuration (exit 0 only when all pass)
python app.py audit verify         recompute the audit hash chain
python app.py audit export --since 2026-01-01 --format csv|jsonl
python app.py migrate              apply database migrations and exit
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from aiohttp import web

from bot.logs import configure_logging
from bot.settings import Settings, SettingsError, load_settings

log = logging.getLogger("bot")


def settings_or_exit() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        print("Configuration errors (the bot did not start):", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        raise SystemExit(2) from None


def serve(settings: Settings) -> None:
    from bot.runtime import build_app

    if settings.anonymous:
        log.warning(
            "ANONYMOUS Bot Framework mode (ALLOW_ANONYMOUS=true, no CONNECTIONS__SERVICE_CONNECTION__SETTINGS__CLIENTID): "
            "inbound requests are not authenticated and replies carry no token; listening on 127.0.0.1 only. "
            "Use this only on a local machine."
        )
    web.run_app(
        build_app(settings),
        host=settings.host,
        port=settings.port,
        shutdown_timeout=10,
        print=lambda _msg: None,
        access_log=None,
        handle_signals=True,
    )


async def audit_command(settings: Settings, args: argparse.Namespace) -> int:
    from bot.audit import AuditLog
    from bot.store import Store

    store = await Store.open(settings.database_url)
    try:
        audit = AuditLog(store)
        if args.audit_command == "verify":
            ok, problems = await audit.verify()
            for problem in problems:
                print(problem)
            print("audit trail OK" if ok else f"audit trail TAMPERED: {len(problems)} problem(s)")
            return 0 if ok else 1
        try:
            sys.stdout.write(await audit.export(args.format, args.since))
        except ValueError as exc:
            print(f"audit export: {exc}", file=sys.stderr)
            return 2
        return 0
    finally:
        await store.close()


async def migrate_command(settings: Settings) -> int:
    from bot.store import Store

    store = await Store.open(settings.database_url)
    print(f"database at revision {await store.current_revision()}")
    await store.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="app.py", description="ChromeOS deprovision bot for Microsoft Teams")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("serve", help="run the bot (default)")
    sub.add_parser("doctor", help="check the configured tenant, permissions, database and Bot Framework credentials")
    sub.add_parser("migrate", help="apply database migrations")
    audit = sub.add_parser("audit", help="audit trail tools")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    audit_sub.add_parser("verify", help="recompute the hash chain; exit 1 if tampered")
    export = audit_sub.add_parser("export", help="write audit events to stdout")
    export.add_argument("--since", help="ISO date or timestamp, e.g. 2026-11-01")
    export.add_argument("--format", choices=("csv", "jsonl"), default="jsonl")
    args = parser.parse_args(argv)

    if args.command == "doctor":
        from bot.doctor import run_doctor

        return asyncio.run(run_doctor())
    settings = settings_or_exit()
    configure_logging(settings.log_format, settings.log_level, settings.secrets())
    if args.command == "audit":
        return asyncio.run(audit_command(settings, args))
    if args.command == "migrate":
        return asyncio.run(migrate_command(settings))
    serve(settings)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
