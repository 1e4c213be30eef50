"""``python app.py doctor`` against the simulated tenant: all green, then one missing piece at a time."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import sys
from pathlib import Path

import pytest

from bot import doctor
from bot.doctor import run_doctor
from bot.errors import GraphError
from bot.settings import load_settings
from bot.store import Store
from simulator import Simulator
from simulator.testing import running_simulator
from tests.harness import ALEX, env_for

ROOT = Path(__file__).resolve().parents[1]
CONN = "CONNECTIONS__SERVICE_CONNECTION__SETTINGS__"
ROW = re.compile(r"^(?P<check>\S.*?)\s{2,}(?P<result>PASS|FAIL|SKIP)\s{2}(?P<text>.*)$")
ALL_CHECKS = [
    "settings complete",
    "Graph token",
    "read managed devices",
    "read Intune roles (RBAC)",
    "read Entra directory roles",
    "check group membership",
    "read Entra device objects",
    "database reachable and migrated",
    "Bot Framework credentials",
    "Bot Framework inbound auth",
]


def rows_of(output: str) -> dict[str, tuple[str, str]]:
    """``{check: (result, text)}`` from the printed table (wrapped text lines joined)."""
    rows: dict[str, tuple[str, str]] = {}
    last: str | None = None
    for line in output.splitlines():
        match = ROW.match(line)
        if match:
            last = match["check"]
            rows[last] = (match["result"], match["text"])
        elif last and line.startswith(" ") and line.strip():
            result, text = rows[last]
            rows[last] = (result, f"{text} {line.strip()}")
        elif not line.strip():
            last = None
    return rows


@pytest.fixture
async def migrated_url(sqlite_url: str) -> str:
    store = await Store.open(sqlite_url)
    await store.close()
    return sqlite_url


@pytest.fixture
def env(sim: Simulator, migrated_url: str) -> dict[str, str]:
    return env_for(
        sim,
        migrated_url,
        **{
            CONN + "CLIENTID": sim.client_id,
            CONN + "CLIENTSECRET": sim.client_secret,
            CONN + "TENANTID": sim.tenant_id,
        },
    )


def assert_no_secrets(output: str, sim: Simulator, *extra: str) -> None:
    assert sim.client_secret not in output
    for token in sim.entra.tokens:
        assert token not in output
    for value in extra:
        assert value not in output


async def test_everything_passes_against_the_simulator(
    sim: Simulator, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    code = await run_doctor(env)
    output = capsys.readouterr().out
    rows = rows_of(output)
    assert list(rows) == ALL_CHECKS  # the simulator's opaque token has no roles claim to read
    assert {check: result for check, (result, _) in rows.items()} == dict.fromkeys(ALL_CHECKS, "PASS")
    assert code == 0
    assert "10 passed, 0 failed, 0 skipped" in output
    assert_no_secrets(output, sim)
    # The checks really ran against the tenant: one token per resource, and the Graph calls were made.
    scopes = {t.scope for t in sim.token_requests if t.status == 200}
    assert scopes == {"https://graph.microsoft.com/.default", "https://api.botframework.com/.default"}
    paths = {c.path.split("?")[0] for c in sim.calls}
    assert "/beta/deviceManagement/managedDevices" in paths
    assert "/beta/deviceManagement/roleAssignments" in paths
    assert "/beta/roleManagement/directory/transitiveRoleAssignments" in paths
    assert "/v1.0/devices" in paths
    assert any(p.endswith("/checkMemberGroups") for p in paths)


@pytest.mark.parametrize(
    ("revoked", "failing", "must_name", "skipped"),
    [
        (
            {"DeviceManagementRBAC.Read.All"},
            "read Intune roles (RBAC)",
            ["DeviceManagementRBAC.Read.All"],
            [],
        ),
        (
            {"DeviceManagementManagedDevices.Read.All", "DeviceManagementManagedDevices.ReadWrite.All"},
            "read managed devices",
            ["DeviceManagementManagedDevices.Read.All"],
            [],
        ),
        (
            {"User.Read.All", "Directory.Read.All"},
            "check group membership",
            ["User.Read.All", "GroupMember.Read.All", "Directory.Read.All"],
            [],
        ),
        (
            {"Device.Read.All", "Directory.Read.All"},
            "read Entra device objects",
            ["Device.Read.All"],
            [],
        ),
        (
            {"RoleManagement.Read.Directory", "Directory.Read.All"},
            "read Entra directory roles",
            ["RoleManagement.Read.Directory"],
            ["check group membership"],  # no user to test with (set DOCTOR_TEST_USER_ID)
        ),
    ],
)
async def test_a_missing_permission_fails_its_row_and_names_the_permission(
    sim: Simulator,
    env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    revoked: set[str],
    failing: str,
    must_name: list[str],
    skipped: list[str],
) -> None:
    sim.state.revoke(revoked)
    code = await run_doctor(env)
    rows = rows_of(capsys.readouterr().out)
    assert code == 1
    result, fix = rows[failing]
    assert result == "FAIL"
    for name in must_name:
        assert name in fix
    assert "admin consent" in fix
    assert sim.client_id in fix  # which app to grant it to
    for check in skipped:
        assert rows[check][0] == "SKIP"
        assert "DOCTOR_TEST_USER_ID" in rows[check][1]
    others = {c: r for c, (r, _) in rows.items() if c != failing and c not in skipped}
    assert set(others.values()) == {"PASS"}, others


async def test_revoked_at_start_via_simulator_option(migrated_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    async with running_simulator(revoke_permissions={"DeviceManagementRBAC.Read.All"}) as sim:
        code = await run_doctor(env_for(sim, migrated_url))
    rows = rows_of(capsys.readouterr().out)
    assert code == 1
    assert rows["read Intune roles (RBAC)"][0] == "FAIL"
    assert "DeviceManagementRBAC.Read.All" in rows["read Intune roles (RBAC)"][1]


async def test_missing_setting_reports_the_variable_and_exits_2(
    sim: Simulator, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    del env["AZURE_TENANT_ID"]
    env["LOG_LEVEL"] = "loud"
    code = await run_doctor(env)
    output = capsys.readouterr().out
    assert code == 2
    fails = [line for line in output.splitlines() if line.startswith("settings complete") and " FAIL " in line]
    assert len(fails) == 2
    assert any("AZURE_TENANT_ID: required" in line for line in fails)
    assert any("LOG_LEVEL" in line for line in fails)
    assert "did not run" in output
    assert sim.token_requests == []  # nothing was attempted


async def test_wrong_graph_secret_fails_the_token_and_skips_graph_checks(
    sim: Simulator, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    wrong = "Wr0ng-secret-value-that-must-not-be-printed"
    env["AZURE_CLIENT_SECRET"] = wrong
    code = await run_doctor(env)
    output = capsys.readouterr().out
    rows = rows_of(output)
    assert code == 1
    assert rows["Graph token"][0] == "FAIL"
    assert "AZURE_CLIENT_SECRET" in rows["Graph token"][1]
    assert "AADSTS7000215" in rows["Graph token"][1]
    for check in ("read managed devices", "read Intune roles (RBAC)", "check group membership"):
        assert rows[check][0] == "SKIP"
    assert rows["Bot Framework credentials"][0] == "PASS"  # the bot's own credentials are separate
    assert_no_secrets(output, sim, wrong)


async def test_anonymous_mode_fails_the_bot_framework_row(
    sim: Simulator, migrated_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = await run_doctor(env_for(sim, migrated_url))
    rows = rows_of(capsys.readouterr().out)
    assert code == 1
    result, fix = rows["Bot Framework credentials"]
    assert result == "FAIL"
    for name in ("CLIENTID", "CLIENTSECRET", "TENANTID"):
        assert CONN + name in fix
    result, fix = rows["Bot Framework inbound auth"]
    assert result == "FAIL" and "ALLOW_ANONYMOUS" in fix
    failing = {"Bot Framework credentials", "Bot Framework inbound auth"}
    assert {r for c, (r, _) in rows.items() if c not in failing} == {"PASS"}


async def test_inbound_auth_row_names_issuers_and_keys(
    sim: Simulator, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert await run_doctor(env) == 0
    result, detail = rows_of(capsys.readouterr().out)["Bot Framework inbound auth"]
    assert result == "PASS"
    assert "1 signing key(s)" in detail and "https://api.botframework.com" in detail
    assert sim.botframework.jwks_requests == 1


async def test_missing_issuer_allow_list_is_a_failing_row(
    sim: Simulator, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    env["BOTFRAMEWORK_ISSUERS"] = " "
    assert await run_doctor(env) == 2
    result, fix = rows_of(capsys.readouterr().out)["settings complete"]
    assert result == "FAIL" and fix.strip().startswith("BOTFRAMEWORK_ISSUERS: ")


async def test_unreachable_signing_keys_fail_the_inbound_row(
    sim: Simulator, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    sim.botframework.jwks_status = 503
    assert await run_doctor(env) == 1
    result, fix = rows_of(capsys.readouterr().out)["Bot Framework inbound auth"]
    assert result == "FAIL" and "BOTFRAMEWORK_OPENID_METADATA" in fix and "503" in fix


async def test_wrong_bot_secret_fails_the_bot_framework_row(
    sim: Simulator, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    wrong = "another-Wr0ng-bot-secret-value"
    env[CONN + "CLIENTSECRET"] = wrong
    code = await run_doctor(env)
    output = capsys.readouterr().out
    result, fix = rows_of(output)["Bot Framework credentials"]
    assert code == 1
    assert result == "FAIL"
    assert CONN + "CLIENTSECRET" in fix
    assert_no_secrets(output, sim, wrong)


async def test_bot_tenant_is_required(sim: Simulator, env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    del env[CONN + "TENANTID"]
    assert await run_doctor(env) == 1
    result, fix = rows_of(capsys.readouterr().out)["Bot Framework credentials"]
    assert result == "FAIL" and CONN + "TENANTID" in fix


async def test_missing_database_file_fails_and_is_not_created(
    sim: Simulator, env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nowhere" / "bot.db"
    env["DATABASE_URL"] = f"sqlite:///{missing}"
    assert await run_doctor(env) == 1
    result, fix = rows_of(capsys.readouterr().out)["database reachable and migrated"]
    assert result == "FAIL"
    assert "python app.py migrate" in fix
    assert not missing.exists()


async def test_unmigrated_database_fails(
    sim: Simulator, env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/empty.db"
    store = await Store.open(url, migrate=False)
    assert await store.ping()  # creates the file, no tables
    await store.close()
    env["DATABASE_URL"] = url
    assert await run_doctor(env) == 1
    result, fix = rows_of(capsys.readouterr().out)["database reachable and migrated"]
    assert result == "FAIL"
    assert "no schema yet" in fix and "python app.py migrate" in fix


async def test_test_user_from_the_environment(
    sim: Simulator, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    env["DOCTOR_TEST_USER_ID"] = ALEX.aad_id
    assert await run_doctor(env) == 0
    rows = rows_of(capsys.readouterr().out)
    assert ALEX.aad_id in rows["check group membership"][1]
    assert ALEX.aad_id in rows["read Entra directory roles"][1]
    assert not any("roleManagement/directory/roleAssignments" in c.path for c in sim.calls)


async def test_unknown_test_user_fails_membership(
    sim: Simulator, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    env["DOCTOR_TEST_USER_ID"] = "99999999-9999-9999-9999-999999999999"
    assert await run_doctor(env) == 1
    result, fix = rows_of(capsys.readouterr().out)["check group membership"]
    assert result == "FAIL"
    assert "DOCTOR_TEST_USER_ID" in fix


def _jwt(claims: dict[str, object]) -> str:
    def part(value: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    return f"{part({'alg': 'RS256', 'typ': 'JWT'})}.{part(claims)}.c2lnbmF0dXJl"


def test_token_roles_reads_the_roles_claim() -> None:
    assert doctor.token_roles("sim.opaque-token") is None
    assert doctor.token_roles("a.b.c") is None
    assert doctor.token_roles(_jwt({"roles": ["User.Read.All"], "idtyp": "app"})) == ["User.Read.All"]
    assert doctor.token_roles(_jwt({"idtyp": "app"})) == []  # nothing consented: the claim is absent


def test_deprovision_consent_row() -> None:
    granted = doctor.deprovision_consent_row(["DeviceManagementManagedDevices.PrivilegedOperations.All"])
    assert granted.result == "PASS"
    assert "UNVERIFIED" in granted.text
    missing = doctor.deprovision_consent_row(["DeviceManagementManagedDevices.Read.All"])
    assert missing.result == "FAIL"
    assert "DeviceManagementManagedDevices.PrivilegedOperations.All" in missing.text
    assert "UNVERIFIED" in missing.text
    read_write = doctor.deprovision_consent_row(["DeviceManagementManagedDevices.ReadWrite.All"])
    # Graph's 2021 permission map lists deprovision under ReadWrite.All: a candidate gate; the row says what is held.
    assert read_write.result == "PASS" and "holds DeviceManagementManagedDevices.ReadWrite.All" in read_write.text
    assert "not DeviceManagementManagedDevices.Read.All, DeviceManagementManagedDevices.PrivilegedOperations.All" in (
        read_write.text
    )


def test_scopes_are_parsed_from_intune_and_graph_403_messages() -> None:
    intune = (
        "Application is not authorized to perform this operation. Application must have one of the following "
        "scopes: DeviceManagementManagedDevices.PrivilegedOperations.All, DeviceManagementManagedDevices.ReadWrite.All"
        " - Operation ID (for customer support): 00000000 - Url: https://fef.msub02.manage.microsoft.com/x"
    )
    assert doctor.scopes_in(intune) == [
        "DeviceManagementManagedDevices.PrivilegedOperations.All",
        "DeviceManagementManagedDevices.ReadWrite.All",
    ]
    assert doctor.scopes_in("Insufficient privileges to complete the operation.") == []


def test_permission_fix_prefers_the_listed_scope_when_ours_is_not_among_them(env: dict[str, str]) -> None:
    settings = load_settings(env)
    exc = GraphError(403, "Forbidden", "Application must have one of the following scopes: Foo.ReadWrite.All")
    fix = doctor.permission_fix(settings, "DeviceManagementRBAC.Read.All", exc)
    assert "permission Foo.ReadWrite.All" in fix


async def test_cli_wiring_exit_codes(sim: Simulator, env: dict[str, str]) -> None:
    """``python app.py doctor`` in a subprocess: the table on stdout and the exit code from run_doctor."""

    async def run(extra: dict[str, str]) -> tuple[int, str]:
        child_env = {**os.environ, **env, "ENV_FILE": "/nonexistent", **extra}
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "app.py",
            "doctor",
            cwd=ROOT,
            env=child_env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
        assert proc.returncode is not None, err
        return proc.returncode, out.decode()

    code, output = await run({})
    assert code == 0, output
    assert {r for r, _ in rows_of(output).values()} == {"PASS"}
    assert_no_secrets(output, sim)

    sim.state.revoke({"DeviceManagementRBAC.Read.All"})
    code, output = await run({})
    assert code == 1
    assert rows_of(output)["read Intune roles (RBAC)"][0] == "FAIL"

    code, output = await run({"AZURE_TENANT_ID": ""})
    assert code == 2
    assert "AZURE_TENANT_ID" in output
