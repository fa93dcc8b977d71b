"""scripts/readme_commands.py: CI runs the README's first-run commands, extracted by a fixed contract."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "readme_commands.py"
spec = importlib.util.spec_from_file_location("readme_commands", SCRIPT)
readme_commands = importlib.util.module_from_spec(spec)
sys.modules["readme_commands"] = readme_commands  # dataclasses resolve the module by name
spec.loader.exec_module(readme_commands)

SAMPLE = """# fbn_prune

Some pitch.

```bash
echo not this block
```

## Quick start
<!-- first-run -->
On a fresh machine:

```bash
bash scripts/install.sh && .venv/bin/fbn-prune prune --recipe smollm2-135m --out smollm2-pruned

bash scripts/test.sh
```

```bash
echo nor this one
```
"""


def test_extracts_the_two_commands_after_the_marker():
    got = readme_commands.extract(SAMPLE)
    assert got.first == "bash scripts/install.sh && .venv/bin/fbn-prune prune --recipe smollm2-135m --out smollm2-pruned"
    assert got.test == "bash scripts/test.sh"
    assert got.out == "smollm2-pruned"


def test_the_output_folder_is_read_from_the_first_command():
    assert readme_commands.FirstRun("a && fbn-prune prune -o 'my out' --recipe r", "t").out == "my out"
    assert readme_commands.FirstRun("fbn-prune prune --out=x", "t").out == "x"
    with pytest.raises(readme_commands.ContractError, match="no --out"):
        readme_commands.FirstRun("fbn-prune prune --recipe r", "t").out


@pytest.mark.parametrize("text, message", [
    (SAMPLE.replace("<!-- first-run -->", ""), "no line containing"),
    ("<!-- first-run -->\n```sh\nls\n```\n", "no ```bash block"),
    ("<!-- first-run -->\n```bash\nls\npwd\n", "not closed"),
    ("<!-- first-run -->\n```bash\nls\n```\n", "exactly two"),
    ("<!-- first-run -->\n```bash\nls\npwd\nid\n```\n", "exactly two"),
    ("<!-- first-run -->\n```bash\n# setup\nls\n```\n", "exactly two"),
    ("<!-- first-run -->\n```bash\nls \\\n  -l\n```\n", "exactly two"),
])
def test_a_readme_that_breaks_the_contract_is_refused(text, message):
    with pytest.raises(readme_commands.ContractError, match=message):
        readme_commands.extract(text)


def test_command_line_prints_one_command_or_exits_2(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(SAMPLE)
    run = lambda *args: subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True)  # noqa: E731
    assert run(str(readme), "test").stdout == "bash scripts/test.sh\n"
    assert run(str(readme), "first").stdout.startswith("bash scripts/install.sh && ")
    assert run(str(readme), "out").stdout == "smollm2-pruned\n"
    readme.write_text("# no marker\n")
    bad = run(str(readme), "first")
    assert bad.returncode == 2 and "no line containing <!-- first-run -->" in bad.stderr and bad.stdout == ""
