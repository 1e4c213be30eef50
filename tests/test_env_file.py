"""Settings from an env file (``ENV_FILE``) apply to the whole process, CA bundles included."""

from __future__ import annotations

import asyncio
import os
import ssl
import sys
from pathlib import Path

import aiohttp
import certifi
import pytest

from bot.settings import SettingsError
from bot.store import Store
from bot.tls import CA_VARIABLES, apply_ca_bundles
from simulator import Simulator, demo
from tests.harness import free_port
from tests.test_doctor import ALL_CHECKS, CONN, rows_of

ROOT = Path(__file__).resolve().parents[1]
#: A CA bundle that does not contain the simulator's CA: what images that set SSL_CERT_FILE machine-wide look like.
#: A real CA bundle the "environment" may already name (pyenv's OpenSSL path may not exist: fall back to Debian's,
#: then certifi's, which httpx installs).
SYSTEM_BUNDLE = next(
    path
    for path in (
        ssl.get_default_verify_paths().openssl_cafile,
        "/etc/ssl/certs/ca-certificates.crt",
        certifi.where(),
    )
    if os.path.isfile(path)
)


def write(path: Path, values: dict[str, str]) -> Path:
    path.write_text("".join(f"{key}={value}\n" for key, value in values.items()), encoding="utf-8")
    return path


def pem(path: Path, name: str) -> Path:
    path.write_text(f"-----BEGIN CERTIFICATE-----\n{name}\n-----END CERTIFICATE-----\n", encoding="ascii")
    return path


# -- apply_ca_bundles -------------------------------------------------------------------------------------


def test_nothing_changes_without_a_ca_bundle_in_the_env_file(tmp_path: Path) -> None:
    env = {"ENV_FILE": str(write(tmp_path / "bot.env", {"PORT": "4000"})), "SSL_CERT_FILE": "/etc/x.pem"}
    assert apply_ca_bundles(env, directory=tmp_path) is None
    assert env == {"ENV_FILE": str(tmp_path / "bot.env"), "SSL_CERT_FILE": "/etc/x.pem"}
    assert apply_ca_bundles({"ENV_FILE": str(tmp_path / "missing.env")}, directory=tmp_path) is None


def test_the_env_file_bundle_reaches_the_process_environment(tmp_path: Path) -> None:
    ca = pem(tmp_path / "ca.pem", "ENVFILE")
    env = {"ENV_FILE": str(write(tmp_path / "bot.env", {"REQUESTS_CA_BUNDLE": str(ca)}))}
    assert apply_ca_bundles(env, directory=tmp_path) == str(ca)
    assert {name: env[name] for name in CA_VARIABLES} == dict.fromkeys(CA_VARIABLES, str(ca))


def test_bundles_from_the_environment_and_the_env_file_are_both_trusted(tmp_path: Path) -> None:
    system = pem(tmp_path / "system.pem", "SYSTEM")
    ca = pem(tmp_path / "ca.pem", "ENVFILE")
    env_file = write(tmp_path / "bot.env", {"SSL_CERT_FILE": str(ca), "REQUESTS_CA_BUNDLE": str(ca)})
    env = {"ENV_FILE": str(env_file), "SSL_CERT_FILE": str(system), "REQUESTS_CA_BUNDLE": str(system)}
    bundle = apply_ca_bundles(env, directory=tmp_path)
    assert bundle is not None and bundle not in (str(system), str(ca))
    assert env["SSL_CERT_FILE"] == env["REQUESTS_CA_BUNDLE"] == bundle
    text = Path(bundle).read_text(encoding="ascii")
    assert text.count("BEGIN CERTIFICATE") == 2 and text.index("SYSTEM") < text.index("ENVFILE")


def test_the_same_bundle_twice_is_not_combined(tmp_path: Path) -> None:
    ca = pem(tmp_path / "ca.pem", "ONE")
    env = {"ENV_FILE": str(write(tmp_path / "bot.env", {"SSL_CERT_FILE": str(ca)})), "REQUESTS_CA_BUNDLE": str(ca)}
    assert apply_ca_bundles(env, directory=tmp_path) == str(ca)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bot.env", "ca.pem"]


def test_a_missing_bundle_is_a_configuration_error(tmp_path: Path) -> None:
    env = {"ENV_FILE": str(write(tmp_path / "bot.env", {"SSL_CERT_FILE": str(tmp_path / "gone.pem")}))}
    with pytest.raises(SettingsError) as caught:
        apply_ca_bundles(env, directory=tmp_path)
    assert "gone.pem" in caught.value.problems[0]
    assert "SSL_CERT_FILE" not in {k for k in env if k != "ENV_FILE"}


# -- the real process -------------------------------------------------------------------------------------


@pytest.fixture
async def env_file(sim: Simulator, tmp_path: Path) -> Path:
    """Everything doctor needs, in an env file only (as ``make doctor-demo`` and a real .env do)."""
    url = f"sqlite+aiosqlite:///{tmp_path}/bot.db"
    store = await Store.open(url)
    await store.close()
    return write(
        tmp_path / "bot.env",
        {
            **sim.env(),
            "DATABASE_URL": url,
            CONN + "CLIENTID": sim.client_id,
            CONN + "CLIENTSECRET": sim.client_secret,
            CONN + "TENANTID": sim.tenant_id,
        },
    )


def process_env(env_file: Path, **extra: str) -> dict[str, str]:
    """The test's environment minus every bot setting, plus ENV_FILE and a CA bundle that lacks the simulator's CA."""
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "CONNECTIONS__", "GRAPH_"))}
    keep.pop("DATABASE_URL", None)
    return {
        **keep,
        "ENV_FILE": str(env_file),
        "SSL_CERT_FILE": SYSTEM_BUNDLE,
        "REQUESTS_CA_BUNDLE": SYSTEM_BUNDLE,
        **extra,
    }


async def doctor(env_file: Path) -> tuple[int, str]:
    """``ENV_FILE=<env_file> python app.py doctor`` — what ``make doctor-demo`` runs."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "app.py",
        "doctor",
        cwd=ROOT,
        env=process_env(env_file),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode is not None
    return proc.returncode, out.decode() + err.decode()


def all_passed(output: str) -> bool:
    return {check: result for check, (result, _) in rows_of(output).items()} == dict.fromkeys(ALL_CHECKS, "PASS")


@pytest.mark.skipif(not os.path.isfile(SYSTEM_BUNDLE), reason="no system CA bundle on this machine")
async def test_doctor_with_env_file_passes_against_the_simulator(sim: Simulator, env_file: Path) -> None:
    code, output = await doctor(env_file)
    assert code == 0, output
    assert all_passed(output), output


@pytest.mark.skipif(not os.path.isfile(SYSTEM_BUNDLE), reason="no system CA bundle on this machine")
async def test_the_demo_env_file_passes_doctor(sim: Simulator, tmp_path: Path) -> None:
    """``make run`` writes data/demo.env with demo.doctor_environment; ``make doctor-demo`` runs doctor with it."""
    url = f"sqlite:///{tmp_path}/demo.db"
    store = await Store.open(url.replace("sqlite://", "sqlite+aiosqlite://"))  # the demo bot migrates it at start
    await store.close()
    path = tmp_path / "data" / "demo.env"
    demo.write_env_file(path, demo.doctor_environment(sim, url))
    assert path.stat().st_mode & 0o777 == 0o600
    code, output = await doctor(path)
    assert code == 0, output
    assert all_passed(output), output
    assert sim.client_secret not in output


def test_make_doctor_demo_uses_the_file_the_demo_writes() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    recipe = makefile.split("\ndoctor-demo:", 1)[1].split("\n\n", 1)[0]
    assert demo.DEMO_ENV == ROOT / "data" / "demo.env"
    assert "ENV_FILE=data/demo.env $(PY) app.py doctor" in recipe


@pytest.mark.skipif(not os.path.isfile(SYSTEM_BUNDLE), reason="no system CA bundle on this machine")
async def test_serve_with_env_file_gets_ready(sim: Simulator, env_file: Path, tmp_path: Path) -> None:
    port = free_port()
    log_path = tmp_path / "bot.log"
    env = process_env(env_file, PORT=str(port), HOST="127.0.0.1", LOG_FORMAT="text")
    env[CONN + "ANONYMOUS_ALLOWED"] = "true"
    with log_path.open("w") as log_file:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "app.py", cwd=ROOT, env=env, stdout=log_file, stderr=asyncio.subprocess.STDOUT
        )
        try:
            status = 0
            async with aiohttp.ClientSession() as session:
                for _ in range(300):
                    try:
                        async with session.get(f"http://127.0.0.1:{port}/readyz") as response:
                            status = response.status
                            if status == 200:
                                break
                    except aiohttp.ClientError:
                        pass
                    await asyncio.sleep(0.1)
            assert status == 200, log_path.read_text()
            for _ in range(100):  # the announcer logs right after its own check passes
                if "bot ready" in log_path.read_text():
                    break
                await asyncio.sleep(0.05)
        finally:
            proc.terminate()
            await asyncio.wait_for(proc.wait(), timeout=30)
    logged = log_path.read_text()
    assert "bot ready" in logged and "not ready" not in logged, logged
