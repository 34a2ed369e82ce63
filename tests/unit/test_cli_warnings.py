"""The parity command prints nothing on stderr that users cannot act on, such as library deprecations."""

import subprocess
import sys

import pytest


# `produce` imports the registry client, whose authlib import deprecates httpx at import time.
@pytest.mark.parametrize("argv", [["views"], ["produce", "--help"]])
def test_no_deprecation_warnings_on_stderr(argv):
    done = subprocess.run(
        [sys.executable, "-m", "parity", *argv], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "Deprecat" not in done.stderr
