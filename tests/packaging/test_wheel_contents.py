"""A normal (non-editable) install gets every subpackage and the SQL migrations."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_wheel_holds_every_package_and_the_migrations(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True, timeout=300,
    )
    wheel = next(tmp_path.glob("malti_stack-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for package_dir in sorted(p.parent for p in ROOT.glob("malti_*/**/__init__.py")):
        rel = package_dir.relative_to(ROOT).as_posix()
        assert f"{rel}/__init__.py" in names, f"{rel} missing from the wheel"
    migrations = sorted(p.name for p in (ROOT / "schema").glob("*.sql"))
    shipped = sorted(Path(n).name for n in names if "/data/share/malti/schema/" in n)
    assert shipped == migrations
    assert any(n.endswith("malti_notebook/examples/analysis.ipynb") for n in names)
    assert any(n.endswith("malti_tui/app.tcss") for n in names)
    # the compiled request path of the SDK, wherever a C compiler is (else the pure-Python one runs)
    headers = Path(sysconfig.get_paths()["include"], "Python.h")
    if os.name == "posix" and (shutil.which("cc") or shutil.which("gcc")) and headers.exists():
        assert any(n.startswith("malti_sdk/_speedups") and n.endswith(".so") for n in names)
