"""The systemd units, checked by systemd's own tools.

`systemd-analyze verify` and `systemd-analyze security --offline=true` read
unit files without a running systemd (there is none on a build machine or in
a container). verify insists that ExecStart= names an executable, so each
unit is checked as a copy whose /opt/ordermail/bin/ordermail is this
checkout's. Where systemd-analyze is missing the tests skip, except in CI
(.ci/run installs Debian's `systemd` package, which ships it).
"""
from __future__ import annotations

import collections
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UNITS = ROOT / "systemd"
INSTALLED = "/opt/ordermail/bin/ordermail"
# The exposure systemd-analyze security gives each unit (README, Deployment): a
# weaker sandbox fails here.
EXPOSURE = {"ordermail.service": 1.2, "ordermail-port25.service": 1.5}


def _systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        message = "systemd-analyze not installed (Debian package 'systemd'); .ci/run installs it"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found


def _checkable_copy(name: str, folder: Path) -> Path:
    ordermail = Path(sys.executable).with_name("ordermail")
    assert ordermail.is_file(), f"{ordermail} missing: run 'make install'"
    copy = folder / name
    copy.write_text((UNITS / name).read_text().replace(INSTALLED, str(ordermail)))
    return copy


def _directives(name: str) -> collections.Counter:
    """Each `Key=value` line of a unit (comments and blank lines left out)."""
    lines = (line.strip() for line in (UNITS / name).read_text().splitlines())
    return collections.Counter(line for line in lines if line and not line.startswith(("#", "[")))


@pytest.mark.parametrize("name", sorted(EXPOSURE))
def test_unit_passes_systemd_analyze_verify_without_a_word(name, tmp_path):
    # verify exits 0 even for an unknown key or a bad value; it only warns. So any output fails.
    analyze = _systemd_analyze()
    result = subprocess.run([analyze, "verify", "--man=no", str(_checkable_copy(name, tmp_path))],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), result.stdout + result.stderr


@pytest.mark.parametrize("name", sorted(EXPOSURE))
def test_unit_exposure_stays_as_low_as_recorded(name, tmp_path):
    analyze = _systemd_analyze()
    result = subprocess.run([analyze, "security", "--offline=true", "--no-pager", str(_checkable_copy(name, tmp_path))],
                            capture_output=True, text=True, timeout=60)
    if "--offline" in result.stderr and result.returncode != 0:
        pytest.skip(f"this systemd-analyze has no --offline: {result.stderr.strip()}")
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d)", result.stdout)
    assert found, result.stdout + result.stderr
    assert float(found.group(1)) <= EXPOSURE[name], result.stdout


def test_only_the_port25_unit_may_bind_a_low_port_and_otherwise_the_units_agree():
    base, port25 = _directives("ordermail.service"), _directives("ordermail-port25.service")
    assert "AmbientCapabilities=CAP_NET_BIND_SERVICE" not in base
    assert base["CapabilityBoundingSet="] == 1                       # no capability at all
    assert set(base - port25) == {"Description=ordermail order-tracking mail daemon",
                                  "CapabilityBoundingSet=", "PrivateUsers=yes"}
    assert set(port25 - base) == {"Description=ordermail order-tracking mail daemon (SMTP on port 25)",
                                  "Conflicts=ordermail.service",
                                  "AmbientCapabilities=CAP_NET_BIND_SERVICE",
                                  "CapabilityBoundingSet=CAP_NET_BIND_SERVICE"}


def test_units_run_the_daemon_as_a_notify_service_with_a_watchdog_and_reload():
    for name in EXPOSURE:
        unit = _directives(name)
        for directive in ("Type=notify", "WatchdogSec=30s", "Restart=on-failure", "User=ordermail",
                          "ExecReload=/bin/kill -HUP $MAINPID", f"ExecStart={INSTALLED} serve",
                          "NoNewPrivileges=yes", "ProtectSystem=strict", "ReadWritePaths=/var/lib/ordermail",
                          "PrivateTmp=yes", "ProtectHome=yes", "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
                          "SystemCallFilter=@system-service"):
            assert unit[directive] == 1, f"{name}: {directive}"
