"""The README's numbers are what its commands print at this commit (issue #19).

Every ``subnas params`` and ``subnas evaluate`` line of the README's bash blocks that ends in a
comment with a number is run here (in process, on the real SmolLM2 and text), and the number it
prints must be the one in the comment; the sub-network example's stated size and the demo's
committed winner are checked the same way. The demo itself (8 minutes) is not rerun here: its
printed numbers are re-measured by running it (README, "What it printed").
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from subnas.cli import main

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
pytestmark = pytest.mark.integration


def _bash_lines() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
    return [line.strip() for block in blocks for line in block.splitlines()]


def _checked_commands() -> list[tuple[str, str]]:
    """(command, comment) for every params/evaluate line whose comment states a number."""
    found = []
    for line in _bash_lines():
        m = re.match(r"(subnas (?:params|evaluate) [^#]*?)\s+#\s*(.*)$", line)
        if m and re.search(r"\d", m.group(2)):
            found.append((m.group(1), m.group(2)))
    return found


def test_the_readme_has_checked_commands() -> None:
    verbs = {cmd.split()[1] for cmd, _ in _checked_commands()}
    assert verbs == {"params", "evaluate"}, _checked_commands()


@pytest.mark.parametrize("command,comment", _checked_commands())
def test_a_readme_command_prints_what_the_readme_says(command: str, comment: str, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(ROOT)  # the README's paths are relative to the checkout
    assert main([*shlex.split(command)[1:], "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    if command.startswith("subnas params"):
        stated = comment.split(" parameters")[0]
        assert f"{printed['parameters']:,}" == stated, (command, printed["parameters"], comment)
    else:
        stated = re.search(r"perplexity ([\d.,]+)", comment).group(1)  # type: ignore[union-attr]
        decimals = len(stated.split(".")[1]) if "." in stated else 0
        assert f"{printed['perplexity']:,.{decimals}f}" == stated, (command, printed["perplexity"], comment)


def test_the_subnet_example_has_the_stated_size() -> None:
    from subnas import SubNetwork, count_parameters
    from subnas.families import load_config

    m = re.search(r"legal for\s+SmolLM2 \(([\d,]+) parameters\):\s*```json\n(.*?)```", README, flags=re.S)
    assert m, "the README's sub-network example and its size"
    subnet = SubNetwork.from_dict(json.loads(m.group(2)))
    assert f"{count_parameters(load_config('default'), subnet):,}" == m.group(1)


def test_the_committed_demo_winner_is_the_one_the_readme_shows() -> None:
    """docs/examples/demo_subnet.json is the sub-network whose demo output the README prints."""
    from subnas import SubNetwork, count_parameters
    from subnas.families import load_config

    subnet = SubNetwork.load(ROOT / "docs" / "examples" / "demo_subnet.json")
    shown = re.search(r"searched sub-network in bin [\d,-]+: ([\d,]+) parameters", README)
    assert shown, "the README shows the demo's output"
    assert f"{count_parameters(load_config('default'), subnet):,}" == shown.group(1)
