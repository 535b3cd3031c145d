"""systemd/archiverd.service under a real systemd (PID 1 in a container of the test dockerd).

The machine is a Debian root file system with systemd, given the image's /opt/archiverd venv
and the unit file unchanged. systemd boots with `--cap-add SYS_ADMIN --security-opt
seccomp=unconfined --cgroupns host` and the host's cgroup tree (`--privileged` is refused on
these machines).

Harness notes, found while making this work:
- `mount --make-rshared /` runs before systemd. systemd makes / shared only when it is not in
  a container (it leaves propagation to the container manager; systemd-nspawn makes it shared,
  docker leaves it private). `LoadCredential=` builds the credentials directory in a helper
  mount namespace and moves it into place; with a private /run that mount never reaches the
  service, which then sees an empty root-owned 0700 directory: exactly the "DynamicUser +
  LoadCredential cannot read its credential" seen before (systemd/systemd#38103: /run must be
  MS_SHARED). archiverd now reports that case as a key error, exit 77 (tests/pack/
  test_key_credentials.py), instead of a PermissionError traceback.
- SYS_PTRACE lets the test read the service's /proc/PID/environ across users, and
  DAC_READ_SEARCH (not in docker's default set) lets systemd grant the unit that capability.
- `DevicePolicy=closed` is not enforceable here: the cgroup v1 devices controller refuses
  writes from inside a container (systemd logs "Failed to reset devices.allow/devices.deny:
  Operation not permitted" and carries on). Everything else in the unit is in force.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deploy import images, live
from tests.deploy.test_systemd_unit import UNIT
from tests.dockerd import DockerDaemon

pytestmark = [pytest.mark.slow, pytest.mark.docker]

PROBE = Path(__file__).with_name("probe_sandbox.py")
KEY = "/etc/archiverd/archive.key"
CONFIG = "/etc/archiverd/archiverd.toml"
STATE = "/var/lib/private/archiverd"  # DynamicUser=yes: /var/lib/archiverd links here
MACHINE_CONFIG = f"""\
# the worker processes too, under the hardened unit (the default runs none where the
# record scanner is compiled)
worker_processes = 2

[[sources]]
kind = "directory"
path = "/var/log/app"
glob = "**/*.log"
rescan_seconds = 1.0

[destination]
url = "file:///var/lib/archiverd/bucket"

[encryption]
key_file = "{KEY}"

[schedule]
upload_at = "{live.NEVER}"
splay_seconds = 0
upload_on_shutdown = true

[http]
listen = "127.0.0.1:9464"
"""
MACHINE_DOCKERFILE = """\
FROM {base}
COPY --from={image} /opt/archiverd /opt/archiverd
COPY archiverd.service /etc/systemd/system/archiverd.service
COPY archiverd-probe.service /etc/systemd/system/archiverd-probe.service
COPY archiverd.toml {config}
COPY probe_sandbox.py /usr/local/lib/probe_sandbox.py
RUN ln -s /opt/archiverd/bin/archiverd /usr/bin/archiverd \\
    && archiverd --version \\
    && install -d -m 0755 /var/log/app
"""


class Machine:
    """A booted systemd container and commands inside it."""

    def __init__(self, daemon: DockerDaemon, name: str, image: str) -> None:
        self.daemon = daemon
        self.name = name
        self.image = image

    def remove(self) -> None:
        """Remove the container (systemd and everything it runs)."""
        self.daemon.docker("rm", "--force", "--volumes", self.name, check=False)

    def sh(self, script: str, *, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run `sh -c script` in the machine as root; stdout and stderr apart."""
        done = subprocess.run(
            ["docker", "exec", self.name, "sh", "-c", script],
            env=self.daemon.env(), capture_output=True, text=True, timeout=180, check=False,
        )  # fmt: skip
        if check and done.returncode != 0:
            raise AssertionError(
                f"{script!r} exited {done.returncode}:\n{done.stdout}{done.stderr}"
            )
        return done

    def show(self, unit: str, *props: str) -> dict[str, str]:
        """`systemctl show` properties of a unit."""
        out = self.sh(f"systemctl show {unit} " + " ".join(f"-p {p}" for p in props)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def state(self) -> str:
        """`systemctl is-system-running` (empty while PID 1 is not answering yet)."""
        return self.sh("systemctl is-system-running", check=False).stdout.strip()

    def journal(self, unit: str) -> str:
        """The unit's journal since boot, message text only."""
        return self.sh(f"journalctl -b --no-pager -o cat -u {unit}").stdout


def probe_unit() -> str:
    """archiverd.service with only the parts that need the daemon itself replaced."""
    lines = []
    for line in UNIT.read_text().splitlines():
        if line.startswith("ExecStart="):
            line = "ExecStart=/usr/bin/python3 /usr/local/lib/probe_sandbox.py"
        elif line == "Type=notify":
            line = "Type=oneshot"
        elif line == "StateDirectory=archiverd":
            # Its own: a second DynamicUser unit on archiverd's dir would chown it away.
            line = "StateDirectory=archiverd-probe"
        elif line.startswith(("WatchdogSec=", "NotifyAccess=", "ExecReload=", "Restart")):
            continue
        lines.append(line)
    return "\n".join(lines) + "\n"


def build_machine_image(dockerd: DockerDaemon, archiverd_image: str, context: Path) -> str:
    """Build the machine image in `context`: the systemd rootfs plus the image's venv."""
    tarball = images.rootfs_tarball(images.SYSTEMD)
    base = f"archiverd-test/systemd:{tarball.stem.rsplit('-', 1)[1]}"
    images.import_rootfs(dockerd, tarball, base)
    (context / "Dockerfile").write_text(
        MACHINE_DOCKERFILE.format(base=base, image=archiverd_image, config=CONFIG)
    )
    shutil.copy(UNIT, context / "archiverd.service")
    (context / "archiverd-probe.service").write_text(probe_unit())
    (context / "archiverd.toml").write_text(MACHINE_CONFIG)
    shutil.copy(PROBE, context / "probe_sandbox.py")
    tag = f"archiverd-test/systemd-machine:{secrets.token_hex(4)}"
    images.docker_build(dockerd, context, tag)
    return tag


def boot(dockerd: DockerDaemon, tag: str, *, as_reported: bool = False) -> Machine:
    """Boot systemd as PID 1 in a container of `tag`; wait until it is running.

    `as_reported=True` is the command from the bug report: docker's private mount propagation
    and default capabilities plus SYS_ADMIN (see the module docstring for the difference).
    """
    if as_reported:
        extra, command = [], ["/lib/systemd/systemd"]
    else:
        extra = ["--cap-add", "SYS_PTRACE", "--cap-add", "DAC_READ_SEARCH"]
        command = ["sh", "-c", "mount --make-rshared / && exec /lib/systemd/systemd"]
    name = f"systemd-{secrets.token_hex(4)}"
    dockerd.docker(
        "run", "--detach", "--name", name, "--network", "none", "--cap-add", "SYS_ADMIN",
        *extra, "--security-opt", "seccomp=unconfined",
        "--volume", "/sys/fs/cgroup:/sys/fs/cgroup:rw", "--cgroupns", "host", tag, *command,
    )  # fmt: skip
    box = Machine(dockerd, name, tag)
    try:
        live.wait_for("systemd finishes booting", lambda: box.state() in {"running", "degraded"})
        failed = box.sh("systemctl --failed --no-legend", check=False).stdout
        assert box.state() == "running", f"failed units:\n{failed}"
    except BaseException:
        box.remove()
        raise
    return box


@pytest.fixture(scope="module")
def machine(
    dockerd: DockerDaemon, archiverd_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Machine]:
    """A systemd machine with archiverd installed from the image; removed afterwards."""
    context = tmp_path_factory.mktemp("systemd-context")
    box = boot(dockerd, build_machine_image(dockerd, archiverd_image, context))
    yield box
    box.remove()


def _pid(machine: Machine) -> int:
    return int(machine.show("archiverd", "MainPID")["MainPID"])


def _metric(machine: Machine, name: str) -> float:
    text = machine.sh(
        'python3 -c "import urllib.request; print(urllib.request.urlopen('
        "'http://127.0.0.1:9464/metrics', timeout=5).read().decode())\""
    ).stdout
    return live.metric_total(text, name)


def test_bad_key_fails_start_with_77_and_is_not_restarted(machine: Machine) -> None:
    """A malformed key: start fails with 77 before READY=1, never active, never restarted."""
    machine.sh(f"echo not-a-key > {KEY} && chmod 600 {KEY}")
    done = machine.sh("systemctl start archiverd", check=False)
    assert done.returncode != 0
    shown = machine.show(
        "archiverd", "ExecMainStatus", "ActiveState", "ActiveEnterTimestampMonotonic", "NRestarts"
    )
    assert shown["ExecMainStatus"] == "77"
    assert shown["ActiveEnterTimestampMonotonic"] == "0"  # Type=notify: never reached active
    journal = machine.journal("archiverd")
    assert "is not a base64 256-bit key" in journal
    assert "Traceback" not in journal
    assert shown["ActiveState"] == "failed"  # not "activating (auto-restart)"
    machine.sh("sleep 6")  # RestartSec=5s: a restart would have happened by now
    shown = machine.show("archiverd", "ActiveState", "NRestarts")
    assert shown == {"ActiveState": "failed", "NRestarts": "0"}
    assert "Scheduled restart" not in machine.journal("archiverd")
    machine.sh("systemctl reset-failed archiverd")


def test_starts_active_with_the_key_from_load_credential(machine: Machine) -> None:
    """With a good key the unit turns active after READY=1; the key came via LoadCredential."""
    machine.sh(f"rm -f {KEY} && archiverd keygen --out {KEY}")
    machine.sh("systemctl start archiverd")  # Type=notify: returns once READY=1 arrived
    assert machine.sh("systemctl is-active archiverd").stdout.strip() == "active"
    pid = _pid(machine)
    environ = machine.sh(f"tr '\\0' '\\n' < /proc/{pid}/environ").stdout.splitlines()
    assert "CREDENTIALS_DIRECTORY=/run/credentials/archiverd.service" in environ
    key = machine.sh(f"cat {KEY}").stdout.strip()
    credential = machine.sh(
        f"cat /proc/{pid}/root/run/credentials/archiverd.service/archive.key"
    ).stdout.strip()
    assert credential == key
    status = dict(
        line.split(":\t", 1) for line in machine.sh(f"cat /proc/{pid}/status").stdout.splitlines()
    )
    assert status["Uid"].split()[0] != "0"  # DynamicUser=yes
    assert status["NoNewPrivs"] == "1"
    assert status["Seccomp"] == "2"
    assert status["CapBnd"] == status["CapEff"] == f"{1 << 2:016x}"  # CAP_DAC_READ_SEARCH only
    cmdline = machine.sh(f"tr '\\0' ' ' < /proc/{pid}/cmdline").stdout
    assert key not in "\n".join(environ) + cmdline
    assert key not in machine.journal("archiverd")


def test_reload_applies_a_changed_upload_at(machine: Machine) -> None:
    """`systemctl reload` (SIGHUP) makes the running daemon take a new schedule.upload_at."""
    if machine.sh("systemctl is-active archiverd", check=False).stdout.strip() != "active":
        machine.sh("systemctl start archiverd")
    pid = _pid(machine)
    machine.sh(f"sed -i 's/^upload_at = .*/upload_at = \"05:43\"/' {CONFIG}")
    machine.sh("systemctl reload archiverd")
    live.wait_for(
        "the daemon logs the reload",
        lambda: (
            re.search(
                r'"upload_at": "05:43".*"event": "reloaded"|"event": "reloaded"'
                r'.*"upload_at": "05:43"',
                machine.journal("archiverd"),
            )
            is not None
        ),
        timeout=30,
    )
    assert _pid(machine) == pid
    machine.sh(f"sed -i 's/^upload_at = .*/upload_at = \"{live.NEVER}\"/' {CONFIG}")
    machine.sh("systemctl reload archiverd")


def test_hardening_directives_are_in_force(machine: Machine) -> None:
    """The unit's sandbox: read-only system, private tmp, no home, one capability, filters."""
    machine.sh("systemctl start archiverd-probe")
    reports = [line for line in machine.journal("archiverd-probe").splitlines() if line[:1] == "{"]
    found = json.loads(reports[-1])
    cap_dac_read_search = f"{1 << 2:016x}"
    assert found["uid"] != 0  # DynamicUser
    assert found["state_dir"] == "ok 0o600"  # StateDirectory= writable; UMask=0077
    assert found["etc"] == found["usr"] == found["var_log"] == "EROFS"  # ProtectSystem=strict
    assert found["tmp"] == "ok 0o600"  # PrivateTmp=yes: writable, its own
    assert found["root_home"] in {"EACCES", "ENOENT", "EROFS"}  # ProtectHome=yes
    assert found["netlink"] == found["packet"] == "EAFNOSUPPORT"  # RestrictAddressFamilies=
    assert found["inet"] == "ok"
    assert found["unshare"] == "EPERM"  # RestrictNamespaces=yes
    assert found["clock_settime"] == "EPERM"  # ProtectClock=yes, SystemCallFilter=~@clock
    assert found["wx_mapping"] in {"EPERM", "EACCES"}  # MemoryDenyWriteExecute=yes
    assert found["proc_pid1"] is False  # ProtectProc=invisible
    assert found["proc_sys"] is False  # ProcSubset=pid
    assert found["NoNewPrivs"] == "1"
    assert found["Seccomp"] == "2"  # SystemCallFilter= installed a filter
    assert found["CapBnd"] == found["CapAmb"] == cap_dac_read_search
    assert found["CapEff"] == cap_dac_read_search


def test_stop_seals_and_uploads_before_exit(machine: Machine, tmp_path: Path) -> None:
    """`systemctl stop` seals the open segment and uploads it; the bucket restores it whole."""
    if machine.sh("systemctl is-active archiverd", check=False).stdout.strip() != "active":
        machine.sh("systemctl start archiverd")
    lines = [f"unit line {n} of the systemd test" for n in range(400)]
    expected = ("\n".join(lines) + "\n").encode()
    read_before = _metric(machine, "archiverd_source_bytes_read_total")
    machine.sh(f"printf '%s\\n' {' '.join(repr(line) for line in lines)} > /var/log/app/app.log")
    live.wait_for(
        "the daemon read the file",
        lambda: (
            _metric(machine, "archiverd_source_bytes_read_total") >= read_before + len(expected)
        ),
    )
    assert machine.sh(f"ls {STATE}/bucket 2>/dev/null | wc -l").stdout.strip() == "0"
    machine.sh("systemctl stop archiverd")
    shown = machine.show("archiverd", "Result", "ExecMainStatus", "ActiveState")
    assert shown == {"Result": "success", "ExecMainStatus": "0", "ActiveState": "inactive"}
    journal = machine.journal("archiverd")
    assert "shutdown complete" in journal
    # the hardened unit (seccomp filter, PrivateTmp, PrivateDevices) lets the worker
    # processes start and pack: no fallback to the daemon's threads
    assert "worker processes started" in journal
    assert "in worker processes failed" not in journal
    bucket = tmp_path / "bucket"
    subprocess.run(
        ["docker", "cp", f"{machine.name}:{STATE}/bucket", str(bucket)],
        env=machine.daemon.env(), check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    key = tmp_path / "archive.key"
    key.write_text(machine.sh(f"cat {KEY}").stdout)
    key.chmod(0o600)
    restored = live.restore(f"file://{bucket}", key, tmp_path / "restored")
    assert b"".join(path.read_bytes() for path in restored) == expected


def test_watchdog_restarts_a_frozen_daemon(machine: Machine) -> None:
    """A daemon stopped with SIGSTOP misses its WATCHDOG=1 pings and systemd restarts it.

    A drop-in shortens WatchdogSec=60s to 5 s so the test does not wait a minute; the
    mechanism (pings at half $WATCHDOG_USEC while healthy, SIGABRT and Restart=on-failure on
    a miss) is the unit's own.
    """
    machine.sh(
        "mkdir -p /etc/systemd/system/archiverd.service.d && printf '[Service]\\nWatchdogSec=5s\\n'"
        " > /etc/systemd/system/archiverd.service.d/watchdog.conf && systemctl daemon-reload"
    )
    try:
        machine.sh("systemctl restart archiverd")
        frozen = _pid(machine)
        restarts = int(machine.show("archiverd", "NRestarts")["NRestarts"])
        machine.sh(f"kill -STOP {frozen}")
        live.wait_for(
            "systemd restarts the frozen daemon",
            lambda: (
                _pid(machine) not in {0, frozen}
                and machine.sh("systemctl is-active archiverd", check=False).stdout.strip()
                == "active"
            ),
        )
        assert int(machine.show("archiverd", "NRestarts")["NRestarts"]) == restarts + 1
        assert "Watchdog timeout" in machine.journal("archiverd")
    finally:
        machine.sh(
            "rm -rf /etc/systemd/system/archiverd.service.d && systemctl daemon-reload"
            " && systemctl stop archiverd",
            check=False,
        )


def test_unreadable_credentials_are_a_key_error_not_a_traceback(machine: Machine) -> None:
    """The reported failure: in the harness as first tried the credential never reaches the
    service; archiverd now exits 77 with a message (was: PermissionError traceback, exit 1)."""
    plain = boot(machine.daemon, machine.image, as_reported=True)
    try:
        plain.sh(f"archiverd keygen --out {KEY}")
        assert plain.sh("systemctl start archiverd", check=False).returncode != 0
        assert plain.show("archiverd", "ExecMainStatus")["ExecMainStatus"] == "77"
        journal = plain.journal("archiverd")
        assert "/run/credentials/archiverd.service/archive.key" in journal
        assert "Permission denied" in journal
        assert "Traceback" not in journal
    finally:
        plain.remove()
