"""The browser UI's files: the vendored bundles match their MANIFEST, the page
and our modules reference only files that exist, and the built wheel carries
all of them (so `pip install .` needs no node)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from twisted.internet import utils
from twisted.trial import unittest

from spinrt.web.ui import STATIC_DIR

VENDOR = STATIC_DIR / "vendor"
APP = STATIC_DIR / "app"
CHECKOUT = Path(__file__).resolve().parent.parent
IMPORT = re.compile(r"""(?:^|[;\s])(?:import|export)\s[^;]*?\sfrom\s*["']([^"']+)["']|import\s*\(\s*["']([^"']+)["']""", re.M)


def manifest() -> dict:
    return json.loads((VENDOR / "MANIFEST.json").read_text())


def vendor_files() -> set[str]:
    return {p.relative_to(VENDOR).as_posix() for p in VENDOR.rglob("*") if p.is_file()} - {"MANIFEST.json"}


def imports_of(path: Path) -> list[Path]:
    """The files a module imports (relative specifiers only: a browser cannot
    resolve bare ones without an import map, which our CSP would refuse inline)."""
    found = []
    for static, dynamic in IMPORT.findall(path.read_text()):
        spec = static or dynamic
        if not spec.startswith(("./", "../")):
            raise AssertionError(f"{path.name} imports {spec!r}: only relative imports work here")
        found.append((path.parent / spec).resolve())
    return found


def module_closure(entry: Path) -> set[Path]:
    seen: set[Path] = set()
    todo = [entry.resolve()]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        todo.extend(imports_of(path))
    return seen


class Vendor(unittest.TestCase):
    def test_checksums(self) -> None:
        files = manifest()["files"]
        for name, entry in files.items():
            body = (VENDOR / name).read_bytes()
            self.assertEqual(hashlib.sha256(body).hexdigest(), entry["sha256"], name)
            self.assertEqual(len(body), entry["bytes"], name)

    def test_every_file_is_listed(self) -> None:
        self.assertEqual(set(manifest()["files"]), vendor_files())

    def test_every_package_has_version_licence_and_text(self) -> None:
        data = manifest()
        bundled = {name for entry in data["files"].values() for name in entry.get("packages", [])}
        self.assertEqual(bundled, set(data["packages"]))
        for name, package in data["packages"].items():
            self.assertRegex(package["version"], r"^\d+\.\d+\.\d+$", name)
            self.assertTrue(package["license"], name)
            text = (VENDOR / package["license_file"]).read_text()
            self.assertIn("Permission" if "MIT" in package["license"] else "License", text, name)
        for library in ("codemirror", "@codemirror/lang-python", "@codemirror/lang-json", "@codemirror/lang-markdown",
                        "@codemirror/legacy-modes", "@codemirror/theme-one-dark", "dompurify", "marked", "ansi_up",
                        "preact", "htm", "@preact/signals"):
            self.assertIn(library, data["packages"])

    def test_pinned_like_the_lockfile(self) -> None:
        """MANIFEST versions are those tools/vendor/package.json pins exactly."""
        pins = json.loads((CHECKOUT / "tools/vendor/package.json").read_text())["devDependencies"]
        for name, version in pins.items():
            self.assertRegex(version, r"^\d+\.\d+\.\d+$", f"{name} must be pinned exactly")
            if name in manifest()["packages"]:
                self.assertEqual(manifest()["packages"][name]["version"], version, name)

    def test_one_codemirror(self) -> None:
        """CodeMirror refuses extensions from a second copy of @codemirror/state:
        exactly one bundle may carry it (likewise Preact)."""
        files = manifest()["files"]
        for package in ("@codemirror/state", "preact"):
            carriers = [name for name, entry in files.items() if package in entry.get("packages", [])]
            self.assertEqual(len(carriers), 1, (package, carriers))


class Page(unittest.TestCase):
    def page(self) -> str:
        return (STATIC_DIR / "index.html").read_text()

    def test_references_exist(self) -> None:
        urls = re.findall(r'(?:src|href)="([^"]+)"', self.page())
        self.assertTrue(urls)
        for url in urls:
            self.assertTrue(url.startswith("@STATIC@/"), url)
            self.assertTrue((STATIC_DIR / url.removeprefix("@STATIC@/")).is_file(), url)

    def test_no_inline_script_or_style(self) -> None:
        """The CSP forbids inline script; styles stay in style.css too."""
        page = self.page()
        for tag in re.findall(r"<script\b[^>]*>", page):
            self.assertIn('type="module"', tag)
            self.assertRegex(tag, r'\ssrc="')
        self.assertEqual(re.findall(r"<script\b[^>]*>\s*[^<\s]", page), [])  # nothing between the tags
        self.assertNotRegex(page, r"<style\b|\sstyle=|\son[a-z]+=|javascript:")

    def test_every_module_is_preloaded(self) -> None:
        """Every module main.js needs is fetched at once (modulepreload), not
        one import level after another: the page's time to interactive."""
        preloaded = {(STATIC_DIR / u.removeprefix("@STATIC@/")).resolve()
                     for u in re.findall(r'<link rel="modulepreload" href="([^"]+)"', self.page())}
        needed = module_closure(APP / "main.js") - {(APP / "main.js").resolve()}
        self.assertEqual(needed - preloaded, set())
        self.assertEqual(preloaded - needed, set())

    def test_all_imports_resolve(self) -> None:
        for path in APP.rglob("*.js"):
            for target in imports_of(path):
                self.assertTrue(target.is_file(), f"{path.relative_to(STATIC_DIR)} imports a missing {target}")

    def test_token_stays_out_of_urls_cookies_and_local_storage(self) -> None:
        """PROTOCOL.md 8: sessionStorage only; a header or the subprotocol on the wire."""
        for path in APP.rglob("*.js"):
            text = path.read_text()
            for forbidden in ("document.cookie", "localStorage", "?token=", "eval(", "new Function"):
                self.assertNotIn(forbidden, text, path.name)
            # `token=${...}` only as a component's prop (` token=${token}`), never inside a URL
            self.assertEqual(re.findall(r"\Stoken=\$\{", text), [], path.name)


class Wheel(unittest.TestCase):
    """`pip wheel .` of a copy of the checkout (the build writes build/ and
    *.egg-info next to its sources) carries every UI file."""

    timeout = 300

    async def test_wheel_has_the_ui(self) -> None:
        work = Path(tempfile.mkdtemp(prefix="spin-wheel-"))
        self.addCleanup(shutil.rmtree, work, True)
        source = work / "src"
        source.mkdir()
        for name in ("setup.cfg", "pyproject.toml", "README.rst"):
            shutil.copy(CHECKOUT / name, source / name)
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "dropin.cache")
        for name in ("spinrt", "twisted"):
            shutil.copytree(CHECKOUT / name, source / name, ignore=ignore)
        out, err, code = await utils.getProcessOutputAndValue(
            sys.executable, ["-m", "pip", "wheel", "--no-deps", "-q", "-w", str(work / "dist"), str(source)],
            env=dict(os.environ),
        )
        self.assertEqual(code, 0, err.decode(errors="replace")[-3000:])
        [wheel] = (work / "dist").glob("spinrt-*.whl")
        names = set(zipfile.ZipFile(wheel).namelist())
        expected = {"spinrt/web/static/index.html", "spinrt/web/static/vendor/MANIFEST.json"}
        expected |= {f"spinrt/web/static/vendor/{name}" for name in manifest()["files"]}
        expected |= {"spinrt/web/static/" + PurePosixPath(p.relative_to(STATIC_DIR).as_posix()).as_posix()
                     for p in APP.rglob("*") if p.is_file()}
        self.assertEqual(expected - names, set())
        self.assertIn("spinrt/web/ui.py", names)
