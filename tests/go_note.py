"""The Go reference implementation of C2SP signed notes (golang.org/x/mod/sumdb/note), called from the
tests: tests/interop/notecheck.go built with Debian's Go and golang.org/x/mod packages, which
scripts/install-go-note.sh installs when they are missing (root or passwordless sudo)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "tests" / "interop" / "notecheck.go"
GOPATH = Path("/usr/share/gocode")
NOTE_PACKAGE = GOPATH / "src" / "golang.org" / "x" / "mod" / "sumdb" / "note" / "note.go"


def _installed() -> bool:
    return shutil.which("go") is not None and NOTE_PACKAGE.exists()


def _install() -> str:
    """Run the install script; the reason it failed (empty when it worked)."""
    try:
        done = subprocess.run([str(ROOT / "scripts" / "install-go-note.sh")], stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=1500)
        return "" if done.returncode == 0 else (done.stderr or done.stdout).strip()[-400:]
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{type(exc).__name__}: {exc}"


def build(folder: Path) -> Path:
    """The notecheck binary, built in ``folder``; skips the test (with the reason) only when Go or the
    x/mod package cannot be installed here."""
    if not _installed():
        why = _install()
        if not _installed():
            pytest.skip(f"the Go reference (golang-go, golang-golang-x-mod-dev) is not installed and could not "
                        f"be installed: {why or 'no go or note.go after the install script'}")
    binary = folder / "notecheck"
    env = {**os.environ, "GO111MODULE": "off", "GOPATH": str(GOPATH), "GOCACHE": str(folder / "gocache"),
           "GOFLAGS": "", "CGO_ENABLED": "0"}
    done = subprocess.run(["go", "build", "-o", str(binary), str(SOURCE)], env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=600, cwd=folder)
    assert done.returncode == 0, f"go build failed: {done.stderr}"
    return binary


class NoteCheck:
    """Calls of the built notecheck binary."""

    def __init__(self, binary: Path):
        self.binary = binary

    def _run(self, args: list[str], stdin: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.binary), *args], input=stdin.encode(), capture_output=True, timeout=60)

    def open(self, note: str, *vkeys: str) -> dict:
        """note.Open's answer as JSON: text, verified, unverified, checkpoint; or {"error": ...}."""
        done = self._run(["open", *vkeys], note)
        return json.loads(done.stdout)

    def sign(self, text: str, skey: str) -> str:
        done = self._run(["sign", skey], text)
        assert done.returncode == 0, done.stdout
        return done.stdout.decode()

    def generate(self, name: str) -> tuple[str, str]:
        done = self._run(["generate", name], "")
        assert done.returncode == 0, done.stdout
        skey, vkey = done.stdout.decode().splitlines()
        return skey, vkey


@pytest.fixture(scope="session")
def notecheck(tmp_path_factory) -> NoteCheck:
    """The Go reference's note.Open / note.Sign / note.GenerateKey, as a command."""
    return NoteCheck(build(tmp_path_factory.mktemp("go-note")))
