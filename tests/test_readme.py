"""The README is a front door, not a work log: no commit hashes or session diaries, and every concrete
``npvae ...`` command it shows parses with today's command line."""

import re
import shlex
from pathlib import Path

import pytest

from npvae import cli

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def _commands():
    """Concrete commands in backticks: no [optional] or ... placeholders."""
    found = [" ".join(c.split()) for c in re.findall(r"`(?:OPENBLAS_NUM_THREADS=1 )?(npvae [^`]+)`", README)]
    return sorted({c for c in found if not re.search(r"[\[\]|]|\.\.\.|\bNAME\b|\bRUN\b|\bDIR\b", c)})


def test_readme_tells_no_history():
    assert not re.search(r"\b(first|second|third|fourth) session\b", README, re.I)
    assert not re.search(r"\bcommit [0-9a-f]{7,40}\b", README)
    assert not re.search(r"\bload average [0-9.]+ (before|after)\b", README)


@pytest.mark.parametrize("command", _commands())
def test_readme_commands_parse(command):
    argv = shlex.split(command)[1:]
    parser = cli.build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert argv[0] in commands, f"{argv[0]}: no such command"
    if all(commands.get(a) or a in ("vae", "m2", "ssvae", "build", "list") for a in argv):
        return                           # a command named in prose, e.g. `npvae figures`
    if "--" in argv:                     # sweep: what follows -- goes to npvae train m2
        argv, extra = argv[:argv.index("--")], argv[argv.index("--") + 1:]
        cli.build_parser().parse_args(["train", "m2", *extra])
    cli.build_parser().parse_args(argv)


def test_readme_shows_the_main_commands():
    assert len(_commands()) >= 6
    assert 'python3 -m pip install -e ".[dev]" && python3 -m pytest -q' in README
    assert 'python3 -m pip install -e ".[dev]" && npvae train' in README
