"""The README's promises: its walk-through runs as written, and its configuration table is complete."""

from __future__ import annotations

import dataclasses
import re
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from settings import Settings

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_readme_opens_with_the_two_commands():
    first_block = re.search(r"```sh\n(.*?)```", README, re.S).group(1)
    assert first_block.splitlines()[0].startswith("make run") and first_block.splitlines()[1].startswith("make test")


def test_every_setting_is_in_the_configuration_table():
    table = README.split("## Configuration", 1)[1].split("##", 1)[0]
    for field in dataclasses.fields(Settings):
        assert f"`{field.name.upper()}`" in table, field.name


@pytest.mark.e2e
def test_walk_through_runs_as_written(stack, tmp_path):
    script = README.split("## Walk-through with curl", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    script = script.replace("BASE=http://127.0.0.1:5000", f"BASE=http://127.0.0.1:{stack.port}")
    run = subprocess.run(["timeout", "60", "bash", "-euo", "pipefail", "-c", script], cwd=tmp_path,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    with Image.open(tmp_path / "resized.jpg") as image:
        assert (image.format, image.size) == ("JPEG", (100, 100))
    assert run.stdout.count('"success":true') >= 4
