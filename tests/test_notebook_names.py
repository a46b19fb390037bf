"""Notebook names (spinrt.notebook_names): every kind of bad name, NFC, the implied suffix."""

from __future__ import annotations

import unicodedata

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial import unittest

from spinrt import notebook_names as names


class CanonicalTests(unittest.TestCase):
    def test_plain_names_stay(self) -> None:
        for name in ("runbook", "Runbook 2", "a.b", "deploy-v1_2", "日本語", "x" * 200, "é" * 100,
                     "a:b", "what?", "a*b", "50% off", "~tilde", "-dash", "a..b", "a.", "#1"):
            self.assertEqual(names.canonical(name), name)

    def test_the_suffix_is_implied(self) -> None:
        self.assertEqual(names.canonical("runbook.ipynb"), "runbook")
        self.assertEqual(names.canonical("a.b.ipynb"), "a.b")
        # Only the lower-case suffix the file has is dropped.
        self.assertEqual(names.canonical("runbook.IPYNB"), "runbook.IPYNB")
        self.assertEqual(names.file_name(names.canonical("runbook.ipynb")), "runbook.ipynb")

    def test_nfc_and_nfd_are_one_name(self) -> None:
        nfd = unicodedata.normalize("NFD", "café")
        self.assertNotEqual(nfd, "café")
        self.assertEqual(names.canonical(nfd), "café")
        self.assertEqual(names.canonical(nfd + ".ipynb"), "café")
        # Hangul and other compositions too.
        self.assertEqual(names.canonical(unicodedata.normalize("NFD", "한국어")), "한국어")

    def test_every_bad_name_is_refused_with_its_reason(self) -> None:
        cases: list[tuple[object, str]] = [
            ("", "non-empty"),
            (None, "non-empty"),
            (5, "non-empty"),
            (["a"], "non-empty"),
        ]
        cases += {
            ".ipynb": "empty once",
            "a.ipynb.ipynb": "only once",
            ".": "'.' or '..'",
            "..": "'.' or '..'",
            "./": "start with '.'",
            ".hidden": "start with '.'",
            "..x": "start with '.'",
            ".spin-abc.tmp": "start with '.'",
            "a/b": "'/'",
            "/etc/passwd": "'/'",
            "../x": "start with '.'",
            "x/..": "'/'",
            "a\\b": "backslash",
            "..\\x": "start with '.'",
            "a\x00b": "NUL",
            "a\nb": "U+000A",
            "a\rb": "U+000D",
            "a\tb": "U+0009",
            "\x1b[31mred": "U+001B",
            "a\x7fb": "U+007F",
            "a\x85b": "U+0085",
            "a\u2028b": "U+2028",
            "a\u2029b": "U+2029",
            "evil\u202egnp.exe": "U+202E",
            "a\u2066b": "U+2066",
            "a\u200fb": "U+200F",
            "a\ud800b": "U+D800",
            " lead": "white space",
            "trail ": "white space",
            "trail\u3000": "white space",
            "x" * 201: "201 bytes",
            "é" * 101: "202 bytes",
            "x" * 201 + ".ipynb": "201 bytes",
        }.items()
        for value, reason in cases:
            with self.assertRaises(ValueError, msg=repr(value)) as caught:
                names.canonical(value)
            self.assertIn(reason, str(caught.exception), repr(value))
            self.assertIn("'name'", str(caught.exception))

    def test_the_limit_counts_bytes_after_nfc(self) -> None:
        # 100 NFD "é" are 300 bytes, 200 once composed: allowed.
        nfd = unicodedata.normalize("NFD", "é") * 100
        self.assertEqual(len(nfd.encode()), 300)
        self.assertEqual(names.canonical(nfd), "é" * 100)
        self.assertEqual(names.canonical("x" * 200 + ".ipynb"), "x" * 200)

    def test_the_field_is_named(self) -> None:
        with self.assertRaises(ValueError) as caught:
            names.check("new_name", "a/b")
        self.assertIn("'new_name'", str(caught.exception))

    @given(st.text(max_size=60))
    def test_canonical_is_idempotent_and_safe(self, text: str) -> None:
        try:
            name = names.canonical(text)
        except ValueError:
            return
        self.assertEqual(names.canonical(name), name)
        self.assertEqual(unicodedata.normalize("NFC", name), name)
        self.assertNotIn("/", name)
        self.assertNotIn("\x00", name)
        self.assertFalse(name.startswith("."))
        self.assertLessEqual(len(name.encode("utf-8")), 200)
        self.assertEqual(names.name_of_file(names.file_name(name)), name)


class FileNameTests(unittest.TestCase):
    def test_which_files_answer_to_a_name(self) -> None:
        self.assertEqual(names.name_of_file("a.ipynb"), "a")
        self.assertEqual(names.name_of_file(unicodedata.normalize("NFD", "café.ipynb")), "café")
        for filename in ("a", "a.txt", ".a.ipynb", ".spin-x.tmp", "a.ipynb.ipynb", "a\\b.ipynb",
                         " a.ipynb", ".ipynb", "x" * 201 + ".ipynb"):
            self.assertIsNone(names.name_of_file(filename), filename)

