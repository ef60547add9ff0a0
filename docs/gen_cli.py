"""Write docs/cli.md from the CLI's own ``--help`` (run: python docs/gen_cli.py).

tests/test_docs.py fails when docs/cli.md is out of date, so the reference never drifts.
"""

from __future__ import annotations

import contextlib
import io
import sys
from pathlib import Path


def render() -> str:
    import os

    os.environ["COLUMNS"] = "100"  # argparse wraps help to the terminal width; fix it
    from subnas.cli import COMMANDS, _parser

    parts = ["# CLI reference", "", "Generated from `subnas VERB --help` by `docs/gen_cli.py`.", ""]
    for verb in [None, *COMMANDS]:
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
            _parser().parse_args(["--help"] if verb is None else [verb, "--help"])
        parts += [f"## subnas {verb or ''}".rstrip(), "", "```text", out.getvalue().rstrip(), "```", ""]
    return "\n".join(parts)


if __name__ == "__main__":
    target = Path(__file__).with_name("cli.md")
    target.write_text(render())
    sys.stdout.write(f"wrote {target}\n")
