"""Rewrites index.html's <link rel="modulepreload"> list from what main.js
imports (transitively), in a stable order, so the browser fetches every
module at once. tests/test_ui_files.py checks the same list; this writes it.

Usage: .venv/bin/python tools/ui_preload.py
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.test_ui_files import APP, STATIC_DIR, module_closure  # noqa: E402

PRELOAD = re.compile(r'^<link rel="modulepreload" href="[^"]+">\n', re.M)


def main() -> None:
    index = STATIC_DIR / "index.html"
    page = index.read_text()
    needed = module_closure(APP / "main.js") - {(APP / "main.js").resolve()}
    # vendor first, then ours, each alphabetically: diffs stay small
    urls = sorted((p.relative_to(STATIC_DIR.resolve()).as_posix() for p in needed),
                  key=lambda u: (not u.startswith("vendor/"), u))
    lines = "".join(f'<link rel="modulepreload" href="@STATIC@/{u}">\n' for u in urls)
    first = PRELOAD.search(page)
    if first is None:
        raise SystemExit("index.html has no modulepreload list to rewrite")
    page = PRELOAD.sub("", page)
    page = page[:first.start()] + lines + page[first.start():]
    index.write_text(page)
    print(f"{len(urls)} modules preloaded")


if __name__ == "__main__":
    main()
