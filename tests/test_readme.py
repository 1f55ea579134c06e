"""The README's commands: every `cips ...` it shows parses (its options exist and take those values), and
the blocks marked runnable run as they stand in an empty folder, writing what they name."""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main

import cips_edge.cli as cli

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
MARKER = "<!-- example: runnable -->"


def bash_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, flags=re.S)


def runnable_blocks() -> list[str]:
    return [bash_blocks(part)[0] for part in README.split(MARKER)[1:]]


def cips_lines() -> list[str]:
    """Every `cips ...` command of the README: lines of its bash blocks (after && too) and inline commands
    that write a file (other inline code names an option, such as `cips render --region`)."""
    lines = [part.strip() for block in bash_blocks(README) for line in block.splitlines()
             for part in line.split("&&")]
    lines += [span for span in re.findall(r"`(cips [^`]+)`", README) if " --out " in span]
    return [line for line in lines if line.startswith("cips ") and "COMMAND" not in line]


def test_the_readme_has_runnable_examples():
    assert len(runnable_blocks()) >= 2 and all("cips render" in b or "cips zoom" in b for b in runnable_blocks())


@pytest.mark.parametrize("line", cips_lines())
def test_every_cips_command_in_the_readme_parses(line):
    args = shlex.split(line, comments=True)[1:]
    group = typer.main.get_command(cli.app)
    assert args[0] in group.commands, line
    group.commands[args[0]].make_context(args[0], args[1:])  # raises on an unknown option or a bad value


@pytest.mark.parametrize("block", runnable_blocks(), ids=lambda b: b.split()[1])
def test_runnable_examples_run_in_an_empty_folder(block, tmp_path):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    for out in re.findall(r"--out '?([^'\s]+)'?", block):
        named = out.replace("{seed:03d}", "007")
        assert (tmp_path / named).exists(), (out, sorted(p.name for p in tmp_path.iterdir()))
    assert "wrote " in done.stdout and "error" not in done.stderr


# -- docs/make_images.sh: the pictures are made by the commands the docs print -----------------------------
ROOT = Path(__file__).resolve().parents[1]
FILE_OPTIONS = ("--out", "--fovea-map")  # where a picture goes differs between the docs and the script


def _commands(text: str) -> list[list[str]]:
    """The `cips ...` commands of shell text, continuation lines joined, as argument lists without the
    options that name output files."""
    joined = text.replace("\\\n", " ")
    found = []
    for line in joined.splitlines():
        line = line.strip().removeprefix("run ").strip()
        if not line.startswith("cips "):
            continue
        args = shlex.split(line, comments=True)
        keep, skip = [], False
        for arg in args:
            if skip:
                skip = False
            elif arg in FILE_OPTIONS:
                skip = True
            else:
                keep.append(arg)
        found.append(keep)
    return found


def test_the_picture_script_runs_only_commands_the_docs_print():
    script = (ROOT / "docs" / "make_images.sh").read_text()
    eye = re.search(r'^EYE="([^"]+)"', script, flags=re.M).group(1)
    made = _commands(script.replace("$EYE", eye))
    docs = "\n".join(block for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
                     for block in bash_blocks(path.read_text()))
    docs += "\n" + "\n".join(re.findall(r"`(cips [^`]+)`", README))
    printed = _commands(docs)
    assert len(made) >= 10
    missing = [" ".join(c) for c in made if c not in printed]
    assert not missing, missing
