"""How long do ``import nbserve`` and ``%load_ext nbserve`` take?  Against ``import bentoml``.

    .venv/bin/python bench/startup.py [--repeat 7]

Each figure is the median of ``--repeat`` fresh interpreters (``python -X importtime`` is
not used: it slows imports down). ``%load_ext nbserve`` is timed inside an IPython shell
that is already running, as in a kernel. The baseline is ``import bentoml``, which
nbserve defers until a deploy needs it. Target (printed, never asserted): <= 0.5 s.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

TARGET_S = 0.5

SNIPPETS = {
    "python (nothing)": "pass",
    "import nbserve": "import nbserve",
    "import bentoml (baseline)": "import bentoml",
}

LOAD_EXT = """
import time
from IPython.core.interactiveshell import InteractiveShell
shell = InteractiveShell.instance()
t0 = time.perf_counter()
shell.run_line_magic("load_ext", "nbserve")
print(time.perf_counter() - t0)
"""


def timed(code: str) -> float:
    wrapper = f"import time; t0 = time.perf_counter()\n{code}\nprint(time.perf_counter() - t0)"
    env = {"BENTOML_DO_NOT_TRACK": "true", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", wrapper], capture_output=True, text=True, env=env, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    results = {}
    for name, code in SNIPPETS.items():
        results[name] = statistics.median(timed(code) for _ in range(args.repeat))
    results["%load_ext nbserve (in a running shell)"] = statistics.median(
        timed(LOAD_EXT) for _ in range(args.repeat)
    )
    print(f"medians of {args.repeat} fresh interpreters")
    for name, seconds in results.items():
        print(f"  {name:<40} {seconds * 1000:8.1f} ms")
    imp = results["import nbserve"]
    ext = results["%load_ext nbserve (in a running shell)"]
    base = results["import bentoml (baseline)"]
    print(f"import nbserve: {imp:.3f} s (target <= {TARGET_S} s: {'met' if imp <= TARGET_S else 'MISSED'}); "
          f"%load_ext nbserve: {ext:.3f} s ({'met' if ext <= TARGET_S else 'MISSED'}); "
          f"import bentoml takes {base / imp:.0f}x as long as import nbserve")
    heavy = subprocess.run(
        [sys.executable, "-c", "import sys, nbserve; print(json.dumps(sorted(m for m in "
         "('bentoml', 'pandas', 'httpx', 'numpy', 'matplotlib', 'ipywidgets') if m in sys.modules)))"
         .replace("json.dumps", "__import__('json').dumps")],
        capture_output=True, text=True, check=True,
    )
    print(f"heavy modules loaded by import nbserve: {json.loads(heavy.stdout) or 'none'}")


if __name__ == "__main__":
    main()
