"""The README's library example runs as printed, so the first thing a newcomer copies works."""

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_the_library_example_runs_and_prints_its_summary(tmp_path):
    section = README.read_text(encoding="utf-8").split("## The library", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    script = tmp_path / "example.py"
    script.write_text(code, encoding="utf-8")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split()[1] for line in lines[:4]] == [
        "create_network", "create_subnet", "verify", "delete_network"]
    assert re.fullmatch(r"4 passed, 0 failed, 0 skipped in \d+\.\d\ds", lines[-1])
