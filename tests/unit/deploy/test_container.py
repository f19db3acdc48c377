"""Static checks of the container image recipe and the Kubernetes example.

There is no Docker engine or cluster on the test machines, so these read the files: what they
catch is the drift that would otherwise only show in production (a root user, dev tools in the
image, a probe on the wrong path, a ConfigMap that no longer matches deploy/config.toml).
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.config import load_settings

ROOT = Path(__file__).resolve().parents[3]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
K8S = ROOT / "deploy" / "kubernetes.yaml"
SIDECAR_CONFIG = ROOT / "deploy" / "config.toml"


# --- Dockerfile ------------------------------------------------------------------------------


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(ln for ln in text.splitlines() if not ln.lstrip().startswith("#")))
    out = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


@pytest.fixture(scope="module")
def docker() -> list[tuple[str, str]]:
    return instructions(DOCKERFILE.read_text())


def final_stage(docker: list[tuple[str, str]]) -> list[tuple[str, str]]:
    last_from = max(i for i, (op, _) in enumerate(docker) if op == "FROM")
    return docker[last_from:]


def test_base_image_is_slim_python(docker: list[tuple[str, str]]) -> None:
    args = dict(a.split("=", 1) for op, a in docker if op == "ARG" and "=" in a)
    for op, arg in docker:
        if op == "FROM":
            image = arg.split()[0]
            image = args.get(image.strip("${}"), image)
            assert re.fullmatch(r"python:3\.1[1-9]-slim(-\w+)?", image), image


def test_runs_as_a_numeric_non_root_user_before_entrypoint(docker: list[tuple[str, str]]) -> None:
    stage = final_stage(docker)
    ops = [op for op, _ in stage]
    users = [arg for op, arg in stage if op == "USER"]
    assert users, "no USER in the runtime stage"
    user = users[-1].split(":")[0]
    assert user.isdigit() and int(user) != 0  # numeric, so runAsNonRoot can verify it
    assert max(i for i, op in enumerate(ops) if op == "USER") < ops.index("ENTRYPOINT")


def test_installs_the_package_without_dev_extras(docker: list[tuple[str, str]]) -> None:
    runs = [arg for op, arg in docker if op == "RUN"]
    installs = [cmd for run in runs for cmd in re.split(r"&&|;", run) if "pip install" in cmd]
    assert any(shlex.split(cmd)[-1] == "." for cmd in installs), installs
    for cmd in installs:
        assert "--no-cache-dir" in cmd
        assert "[" not in cmd, f"extras installed: {cmd}"
    for banned in ("[dev]", "pytest", "embedded", "mypy", "ruff", "hypothesis", "testcontainers", "requirements"):
        assert all(banned not in run for run in runs), banned


def test_entrypoint_and_cmd(docker: list[tuple[str, str]]) -> None:
    stage = dict(final_stage(docker))
    assert json.loads(stage["ENTRYPOINT"]) == ["hypertail"]
    assert json.loads(stage["CMD"]) == ["run", "--config", "/etc/hypertail/config.toml"]


def test_healthcheck_probes_livez_with_python(docker: list[tuple[str, str]]) -> None:
    checks = [arg for op, arg in final_stage(docker) if op == "HEALTHCHECK"]
    assert len(checks) == 1
    check = checks[0]
    assert "urllib" in check and "curl" not in check and "wget" not in check
    env = " ".join(arg for op, arg in final_stage(docker) if op == "ENV")
    assert "http://127.0.0.1:8686/livez" in check + env
    assert re.search(r"--timeout=\d+s", check)


def test_nothing_is_written_at_run_time(docker: list[tuple[str, str]]) -> None:
    env = " ".join(arg for op, arg in final_stage(docker) if op == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert not [a for op, a in final_stage(docker) if op == "VOLUME"]


def ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule, simplified: the last pattern matching the path or a parent decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    result = False
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw[1:] if negate else raw
        pattern = pattern.rstrip("/")
        names = candidates + (parts if pattern.startswith("**/") else [])
        if any(fnmatch.fnmatch(c, pattern.removeprefix("**/")) for c in names):
            result = not negate
    return result


def test_build_context_holds_what_the_build_copies_and_nothing_else() -> None:
    patterns = [ln.strip() for ln in DOCKERIGNORE.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    copies = [arg.split()[:-1] for op, arg in instructions(DOCKERFILE.read_text()) if op == "COPY"]
    sources = [s for src in copies if not any(a.startswith("--from") for a in src) for s in src]
    assert sources
    for src in sources:
        assert not ignored(src, patterns), src
        assert (ROOT / src).exists(), src
    # Symlinks in the package (agent/schema.sql -> ../schema.sql) must resolve inside the context.
    for link in (ROOT / "agent").rglob("*"):
        if link.is_symlink():
            target = link.resolve().relative_to(ROOT).as_posix()
            assert not ignored(target, patterns) and target in sources, target
    for secret_or_noise in (".git/HEAD", "tests/conftest.py", "bench/x.py", ".venv/bin/python", "config.toml",
                            "agent/__pycache__/cli.cpython-311.pyc"):
        assert ignored(secret_or_noise, patterns), secret_or_noise


# --- Kubernetes ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def manifests() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(K8S.read_text()) if d]


def pod_spec(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    for doc in manifests:
        if doc["kind"] == "Pod":
            return dict(doc["spec"])
        if doc["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            return dict(doc["spec"]["template"]["spec"])
    raise AssertionError("no pod template")


def containers(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every long-running container: app containers and native sidecars (restartPolicy Always)."""
    sidecars = [c for c in spec.get("initContainers", []) if c.get("restartPolicy") == "Always"]
    return {c["name"]: c for c in [*spec["containers"], *sidecars]}


def sidecar(spec: dict[str, Any]) -> dict[str, Any]:
    found = [c for c in containers(spec).values() if "hypertail" in c["image"]]
    assert len(found) == 1
    return found[0]


def mounts(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["name"]: m for m in container.get("volumeMounts", [])}


def test_manifests_parse(manifests: list[dict[str, Any]]) -> None:
    kinds = {d["kind"] for d in manifests}
    assert "ConfigMap" in kinds
    assert all("apiVersion" in d and "metadata" in d for d in manifests)


def test_app_and_sidecar_share_an_empty_dir_read_only_in_the_sidecar(manifests: list[dict[str, Any]]) -> None:
    spec = pod_spec(manifests)
    empty_dirs = {v["name"] for v in spec["volumes"] if "emptyDir" in v}
    agent = sidecar(spec)
    apps = [c for c in containers(spec).values() if c is not agent]
    assert apps
    shared = {n for n in empty_dirs if n in mounts(agent) and all(n in mounts(a) for a in apps)}
    assert shared, "no emptyDir mounted by both the app and the sidecar"
    for name in shared:
        assert mounts(agent)[name].get("readOnly") is True
        assert not any(mounts(a)[name].get("readOnly") for a in apps)  # the app must write


def test_probes_on_the_right_paths(manifests: list[dict[str, Any]]) -> None:
    agent = sidecar(pod_spec(manifests))
    ports = {p["name"]: p["containerPort"] for p in agent.get("ports", [])}
    for probe, path in (("livenessProbe", "/livez"), ("readinessProbe", "/readyz"), ("startupProbe", "/startupz")):
        get = agent[probe]["httpGet"]
        assert get["path"] == path
        assert ports.get(get["port"], get["port"]) == 8686


def test_locked_down_security_context(manifests: list[dict[str, Any]]) -> None:
    spec = pod_spec(manifests)
    ctx = {**spec.get("securityContext", {}), **sidecar(spec)["securityContext"]}
    assert ctx["readOnlyRootFilesystem"] is True
    assert ctx["runAsNonRoot"] is True
    assert ctx.get("runAsUser", 10001) != 0
    assert ctx["allowPrivilegeEscalation"] is False


def test_resources_fit_the_memory_budget(manifests: list[dict[str, Any]]) -> None:
    resources = sidecar(pod_spec(manifests))["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"])
    limit = resources["limits"]["memory"]
    assert limit.endswith("Mi")
    budget_mib = load_settings(SIDECAR_CONFIG).batch.memory_budget_bytes / 2**20
    assert int(limit[:-2]) >= budget_mib + 128  # the budget plus interpreter and object overhead


def test_password_comes_from_a_secret(manifests: list[dict[str, Any]]) -> None:
    spec = pod_spec(manifests)
    agent = sidecar(spec)
    settings = load_settings(SIDECAR_CONFIG)
    assert settings.database.password_file is not None
    secret_volumes = {
        v["name"] for v in spec["volumes"]
        if "secret" in v or any("secret" in s for s in v.get("projected", {}).get("sources", []))
    }
    mount_paths = {m["mountPath"] for n, m in mounts(agent).items() if n in secret_volumes}
    assert str(settings.database.password_file.parent) in mount_paths
    env_secret = [e for e in agent.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})]
    assert mount_paths or env_secret


def test_config_map_carries_deploy_config_toml(manifests: list[dict[str, Any]]) -> None:
    spec = pod_spec(manifests)
    agent = sidecar(spec)
    maps = {d["metadata"]["name"]: d for d in manifests if d["kind"] == "ConfigMap"}
    volume = next(v for v in spec["volumes"] if "configMap" in v and v["name"] in mounts(agent))
    assert maps[volume["configMap"]["name"]]["data"]["config.toml"] == SIDECAR_CONFIG.read_text()
    assert mounts(agent)[volume["name"]]["mountPath"] == "/etc/hypertail"
    assert agent.get("args", ["run", "--config", "/etc/hypertail/config.toml"])[-1] == "/etc/hypertail/config.toml"


def test_sidecar_config_is_valid_and_listens_for_probes(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HYPERTAIL_HTTP__LISTEN", "HYPERTAIL_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings(SIDECAR_CONFIG)
    assert settings.http.enabled
    assert (settings.http.host, settings.http.port) == ("0.0.0.0", 8686)
    assert settings.database.sslmode == "verify-full"
    assert settings.sources and all(p.startswith("/var/log/app/") for s in settings.sources for p in s.paths)


def test_sidecar_reads_where_the_app_writes(manifests: list[dict[str, Any]]) -> None:
    spec = pod_spec(manifests)
    log_mount = mounts(sidecar(spec))
    roots = {m["mountPath"] for n, m in log_mount.items() if m.get("readOnly") and n in
             {v["name"] for v in spec["volumes"] if "emptyDir" in v}}
    for source in load_settings(SIDECAR_CONFIG).sources:
        for pattern in source.paths:
            assert any(pattern.startswith(root.rstrip("/") + "/") for root in roots), pattern
