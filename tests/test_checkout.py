"""The checkout is self-contained: a clean clone on any machine has everything its files name."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# First components of absolute paths every Linux machine has (FHS), so naming them ties the repo to no machine.
SYSTEM_ROOTS = frozenset(
    {"bin", "boot", "dev", "etc", "lib", "lib32", "lib64", "proc", "run", "sbin", "sys", "tmp", "usr", "var"}
)
# A path of at least two components, not inside a word, URL (`//`), relative path, JSON pointer (`#/`) or
# variable (`$HOME/…`, `~/…`, `%APPDATA%/…`, `{x}/…`).
ABSOLUTE_PATH = re.compile(r"(?<![\w.:/~\-\\$%{}#])/([A-Za-z_][\w.\-]*)/[\w.\-]+")
# Paths in the Dockerfile are the image's own filesystem (COPY sources are relative to the build context).
IMAGE_FILES = frozenset({"Dockerfile"})


def tracked_text_files() -> dict[str, str]:
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    texts: dict[str, str] = {}
    for name in listed.decode().split("\0"):
        path = ROOT / name
        if not name or name in IMAGE_FILES or not path.is_file():
            continue
        raw = path.read_bytes()
        if b"\0" in raw:
            continue  # binary
        texts[name] = raw.decode("utf-8", errors="replace")
    return texts


def test_the_scan_reads_this_checkout() -> None:
    texts = tracked_text_files()
    assert "tests/test_checkout.py" in texts and "README.md" in texts and "tests/wire/data/README.md" in texts


def test_pattern_finds_machine_paths_and_passes_the_rest() -> None:
    def roots(text: str) -> list[str]:
        return [m.group(1) for m in ABSOLUTE_PATH.finditer(text)]

    def machine_path(*parts: str) -> str:  # built, so that this file names no such path itself
        return "/" + "/".join(parts)

    assert roots(f'Path("{machine_path("home", "ci", "shared", "vectors.json")}")') == ["home"]
    assert roots(f'"json": "{machine_path("srv", "build", "bench", "transport.json")}"') == ["srv"]
    assert roots("see /usr/lib/x and /tmp/pg") == ["usr", "tmp"]
    assert roots("http://127.0.0.1:9464/metrics #/components/messages sql/queries/x.sql ~/a/b $HOME/a/b") == []


def test_no_tracked_file_names_a_path_outside_the_repository() -> None:
    here = f"{ROOT}/"
    found = []
    for name, text in tracked_text_files().items():
        for number, line in enumerate(text.splitlines(), 1):
            machine = [m.group(0) for m in ABSOLUTE_PATH.finditer(line) if m.group(1) not in SYSTEM_ROOTS]
            if here in line:  # this checkout's own absolute path, wherever it lies (even under /tmp)
                machine.append(here)
            found += [f"{name}:{number}: {path}" for path in machine]
    assert found == [], "carry the file in the repo and name it relative to the file that reads it"


def readme_commands() -> list[str]:
    """The README's first two commands (install and serve; test), from its first bash block."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```bash\n(.*?)```", readme, re.DOTALL)
    assert block is not None
    return [line for line in block.group(1).splitlines() if line.strip() and not line.startswith("#")]


def test_readme_commands_install_into_a_virtualenv() -> None:
    # A stock Debian 12 python3 refuses `pip install` outside a virtualenv (externally-managed-environment).
    install_and_serve, test = readme_commands()
    for command in (install_and_serve, test):
        steps = command.split(" && ")
        assert steps[0] == "python3 -m venv .venv"
        assert all(step.startswith(".venv/bin/") for step in steps[1:]), command
    assert install_and_serve.endswith(".venv/bin/booking-rpc serve")
    assert test.endswith(".venv/bin/pytest")


def test_ci_runs_the_readmes_test_command_in_a_clone_outside_the_workspace() -> None:
    _, test = readme_commands()
    script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    commands = [line.strip() for line in script.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert commands[-1] == test
    clone, enter = (
        commands.index('git clone --quiet --no-hardlinks "$checkout" "$scratch/booking-rpc"'),
        commands.index('cd "$scratch/booking-rpc"'),
    )
    assert 'scratch="$(mktemp -d)"' in commands[:clone] and clone < enter < len(commands) - 1
