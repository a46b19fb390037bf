"""Masking of secret values: every form a program may print them in (pure)."""

from __future__ import annotations

import base64
import json
import shlex
import subprocess
import textwrap
import urllib.parse
from typing import Callable

from hypothesis import example, given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from spinrt.secret_forms import LINE_MIN_LENGTH, forms
from spinrt.secrets import MASK, Masker, StreamMasker

# A PEM key as `openssl genpkey` writes it (random base64, not a real key).
PEM = "-----BEGIN PRIVATE KEY-----\n" + "\n".join(textwrap.wrap(base64.b64encode(bytes(range(256)) * 3).decode(), 64)) + "\n-----END PRIVATE KEY-----\n"
KUBECONFIG = (
    "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    server: https://10.1.2.3:6443\n"
    "  name: prod\nusers:\n- name: admin\n  user:\n    token: eyJhbGciOiJSUzI1NiIsImtpZCI6IkFCQyJ9.c2VjcmV0\n"
)
TRICKY = [
    'pa"ss\\word/with\'quotes',
    "sk-live-0123456789abcdef",
    "tab\there and space",
    "ünïcödé-pässwörd-€-𝄞",
    "ctrl\x01\x1b\x7fchars-x",
    "<html>&amp;</html>-token",
    "~#leading,specials!$`*?",
    "line one is long enough\nline two is long enough\n",
]


def bash(script: str, values: list[str]) -> list[str]:
    """Each value through a bash snippet reading $v; NUL-separated."""
    loop = f"while IFS= read -r -d '' v; do {script}; printf '\\0'; done"
    out = subprocess.run(["bash", "-c", loop], input="".join(v + "\0" for v in values).encode(),
                         capture_output=True, check=True).stdout.decode()
    return out.split("\0")[:-1]


def lower_hex(text: str) -> str:
    parts = text.split("%")
    return "%".join([parts[0], *(p[:2].lower() + p[2:] for p in parts[1:])])


def covered(masker: Masker, text: str, start: int, end: int) -> bool:
    """Whether every character of text[start:end] is inside a masked span."""
    spans = masker.spans(text)
    return all(any(a <= i < b for a, b in spans) for i in range(start, end))


def assert_masked(test: unittest.TestCase, masker: Masker, encoded: str, start: int = 0, end: int | None = None) -> None:
    """``encoded[start:end]`` is masked wherever it stands in ordinary text."""
    end = len(encoded) if end is None else end
    for before, after in (("", ""), ("out: ", " :end\n"), ("x", "y")):
        text = before + encoded + after
        test.assertTrue(covered(masker, text, len(before) + start, len(before) + end), (encoded, masker.mask(text)))


# Each: value -> (printed text, start, end of the part that must be masked).
ENCODERS: dict[str, Callable[[str], tuple[str, int, int]]] = {
    "as is": lambda v: (v, 0, len(v)),
    "json.dumps": lambda v: (json.dumps(v), 1, len(json.dumps(v)) - 1),
    "json.dumps ensure_ascii=False": lambda v: (json.dumps(v, ensure_ascii=False), 1, len(json.dumps(v, ensure_ascii=False)) - 1),
    "json with \\/": lambda v: (json.dumps(v).replace("/", "\\/"), 1, len(json.dumps(v).replace("/", "\\/")) - 1),
    "json upper-case \\u": lambda v: (_upper_u(json.dumps(v)), 1, len(json.dumps(v)) - 1),
    "repr": lambda v: (repr(v), 1, len(repr(v)) - 1),
    "shlex.quote": lambda v: (shlex.quote(v), int(shlex.quote(v) != v), len(shlex.quote(v)) - int(shlex.quote(v) != v)),
    "urllib quote": lambda v: (urllib.parse.quote(v), 0, len(urllib.parse.quote(v))),
    "urllib quote safe=''": lambda v: (urllib.parse.quote(v, safe=""), 0, len(urllib.parse.quote(v, safe=""))),
    "urllib quote_plus": lambda v: (urllib.parse.quote_plus(v), 0, len(urllib.parse.quote_plus(v))),
    "lower-case percent": lambda v: (lower_hex(urllib.parse.quote(v, safe="")), 0, len(urllib.parse.quote(v, safe=""))),
}


def _upper_u(text: str) -> str:
    parts = text.split("\\u")
    return parts[0] + "".join("\\u" + p[:4].upper() + p[4:] for p in parts[1:])


def base64_cases(value: str) -> list[tuple[str, str, int, int]]:
    """(label, printed text, start, end): the value's bytes at each alignment
    inside a larger encoded text, unwrapped and wrapped at 76 and 64; the
    complete 3-byte groups of the value must be masked."""
    data = value.strip("\r\n").encode()
    cases = []
    for before in (b"", b"a", b"ab", b"user:"):
        blob = before + data + b"\n"
        first = -(-len(before) // 3) * 4  # first group wholly inside the value
        last = (len(before) + len(data)) // 3 * 4
        if last - first < 8:
            continue
        for alphabet, encode in (("std", base64.b64encode), ("url", base64.urlsafe_b64encode)):
            flat = encode(blob).decode()
            cases.append((f"{alphabet} -w0 after {before!r}", flat, first, last))
            for width in (76, 64):
                lines = [flat[i:i + width] for i in range(0, len(flat), width)]
                wrapped = "\n".join(lines) + "\n"
                cases.append((f"{alphabet} -w{width} after {before!r}", wrapped,
                               first + first // width, last - 1 + (last - 1) // width + 1))
    return cases


class FormsTests(unittest.TestCase):
    def test_single_line_value_as_before(self) -> None:
        masker = Masker(["sk-live-123456"])
        self.assertEqual(masker.mask("key=sk-live-123456; again sk-live-123456\n"), "key=***; again ***\n")
        self.assertEqual(masker.mask("sk-live-12345 is not it"), "sk-live-12345 is not it")
        self.assertFalse(Masker(["abc", "\n\nab\n"]))  # too short to mask
        both = Masker(["secret", "secret-and-more"])
        self.assertEqual(both.mask("secret-and-more secret"), "*** ***")

    def test_outer_line_breaks_are_not_part_of_the_value(self) -> None:
        masker = Masker(["token-from-a-file\n"])
        self.assertEqual(masker.mask("echo: token-from-a-file\nnext\n"), "echo: ***\nnext\n")

    def test_each_long_line_of_a_multi_line_value(self) -> None:
        masker = Masker([PEM])
        lines = PEM.strip().split("\n")
        numbered = "".join(f"{i:6}\t{line}\n" for i, line in enumerate(lines, 1))
        self.assertEqual(masker.mask(numbered), "".join(f"{i:6}\t***\n" for i in range(1, len(lines) + 1)))
        quoted = "".join(f"> {line}\n" for line in lines)
        self.assertEqual(masker.mask(quoted), "> ***\n" * len(lines))
        self.assertEqual(masker.mask("key:\n" + PEM + "done\n"), "key:\n***\ndone\n")
        self.assertEqual(masker.mask(lines[5][:LINE_MIN_LENGTH - 1]), lines[5][:LINE_MIN_LENGTH - 1])

    def test_short_lines_are_not_masked_on_their_own(self) -> None:
        masker = Masker([KUBECONFIG])
        ordinary = "apiVersion: v1\nkind: Config\n- name: admin\n  name: prod\n"
        self.assertEqual(masker.mask(ordinary), ordinary)
        self.assertEqual(masker.mask("cfg:\n" + KUBECONFIG), "cfg:\n***\n")
        prefixed = "".join(f"> {line}\n" for line in KUBECONFIG.splitlines())
        self.assertEqual(masker.mask(prefixed), prefixed.replace("server: https://10.1.2.3:6443", "***")
                         .replace("token: eyJhbGciOiJSUzI1NiIsImtpZCI6IkFCQyJ9.c2VjcmV0", "***"))

    def test_line_endings(self) -> None:
        crlf_secret = PEM.replace("\n", "\r\n")
        lines = PEM.splitlines()
        for secret in (PEM, crlf_secret):
            masker = Masker([secret])
            # LF, CRLF, and a terminal's CR CR LF for a CRLF value.
            for printed in (PEM, crlf_secret, crlf_secret.replace("\r\n", "\r\r\n")):
                body = printed.rstrip("\r\n")
                self.assertEqual(masker.mask("[" + printed + "]"), "[***" + printed[len(body):] + "]")
                numbered = "".join(f"{i:6}\t{line}\r\n" for i, line in enumerate(lines, 1))
                self.assertEqual(masker.mask(numbered), "".join(f"{i:6}\t***\r\n" for i in range(1, len(lines) + 1)))

    def test_lines_match_without_their_indentation(self) -> None:
        secret = "config:\n    password: correct-horse-battery\n    user: short\n"
        masker = Masker([secret])
        self.assertEqual(masker.mask("password: correct-horse-battery\n"), "***\n")
        self.assertEqual(masker.mask("\t  password: correct-horse-battery  \n"), "\t  ***  \n")
        self.assertEqual(masker.mask("user: short\n"), "user: short\n")

    def test_encodings_of_tricky_values(self) -> None:
        for value in [*TRICKY, PEM, KUBECONFIG]:
            masker = Masker([value])
            whole = value.strip("\r\n")
            for label, encode in ENCODERS.items():
                with self.subTest(value=value[:20], encoding=label):
                    assert_masked(self, masker, *encode(whole))
            for label, text, start, end in base64_cases(value):
                with self.subTest(value=value[:20], encoding=label):
                    assert_masked(self, masker, text, start, end)

    def test_bash_quoting(self) -> None:
        values = [v.strip("\r\n") for v in [*TRICKY, PEM, KUBECONFIG]]
        for script, inside in (("printf %q \"$v\"", None), ('printf %s "${v@Q}"', (1, 1))):
            for value, printed in zip(values, bash(script, values)):
                masker = Masker([value])
                start, end = (2, 1) if printed.startswith("$'") else (inside or (0, 0))
                with self.subTest(script=script, value=value[:20], printed=printed[:30]):
                    assert_masked(self, masker, printed, start, len(printed) - end)

    def test_ordinary_text_is_left_alone(self) -> None:
        masker = Masker([PEM, KUBECONFIG, *TRICKY])
        other = base64.b64encode(bytes(range(255, -1, -1)) * 40).decode()
        text = "\n".join(textwrap.wrap(other, 76)) + "\nuser: admin\nkind: Config\n" + json.dumps({"a": "b/c"})
        self.assertEqual(masker.mask(text), text)

    def test_every_form_starts_with_a_literal(self) -> None:
        # re tries an alternative only where its first literal character is;
        # without anchors every chunk of output would run the expression.
        for value in [*TRICKY, PEM, KUBECONFIG]:
            for form in forms(value):
                for alternative in form.regex.split("|"):
                    self.assertFalse(alternative.startswith(("(", "[")), form.regex[:40])
                self.assertTrue(form.anchors, form.regex[:40])

    def test_mask_tree(self) -> None:
        masker = Masker([PEM])
        tree = masker.mask_tree({PEM: [json.dumps(PEM), 3, None, {"k": (PEM.splitlines()[4],)}]})
        self.assertEqual(tree, {"***\n": ['"***\\n"', 3, None, {"k": ["***"]}]})

    @settings(max_examples=200, deadline=None)
    @given(st.text(st.characters(blacklist_categories=("Cs",)), min_size=4, max_size=40).filter(lambda v: len(v.strip("\r\n")) >= 4),
           st.sampled_from(sorted(ENCODERS)))
    @example("a\\b\"c'd/e\nf", "json.dumps")
    def test_any_value_any_encoding(self, value: str, label: str) -> None:
        assert_masked(self, Masker([value]), *ENCODERS[label](value.strip("\r\n")))

    @settings(max_examples=100, deadline=None)
    @given(st.binary(min_size=6, max_size=60).map(lambda b: base64.b85encode(b).decode()))
    def test_any_value_base64(self, value: str) -> None:
        masker = Masker([value])
        for label, text, start, end in base64_cases(value):
            self.assertTrue(covered(masker, text, start, end), (label, text))


class StreamTests(unittest.TestCase):
    def feed_all(self, masker: Masker, pieces: list[str]) -> str:
        stream = StreamMasker()
        out = [stream.feed(masker, "stdout", p) for p in pieces]
        out += [text for _, text in stream.flush(masker)]
        return "".join(out)

    def test_split_anywhere_in_every_form(self) -> None:
        value = 'line one: pa"ss\\wörd/x\nline two: correct-horse-battery\n'
        masker = Masker([value])
        printed = [json.dumps(value), shlex.quote(value), urllib.parse.quote_plus(value), repr(value),
                   base64.b64encode(value.encode()).decode(), base64.encodebytes(value.encode() * 3).decode(), value]
        for text in printed:
            text = f"before {text} after\n"
            whole = masker.mask(text)
            self.assertIn(MASK, whole)
            for cut in range(len(text) + 1):
                self.assertEqual(self.feed_all(masker, [text[:cut], text[cut:]]), whole, (text, cut))

    def test_holdback_covers_the_longest_form(self) -> None:
        masker = Masker(["😀" * 8])
        url = urllib.parse.quote("😀" * 8)  # 12 characters per character of the value
        self.assertGreaterEqual(masker.holdback, len(url) - 1)
        self.assertEqual(self.feed_all(masker, list(url)), MASK)

    def test_a_line_masked_early_does_not_hide_the_whole(self) -> None:
        # The first line alone is a match; the whole value arriving later must
        # still be masked as one, short lines included.
        masker = Masker([KUBECONFIG])
        cut = KUBECONFIG.index("6443") + 5
        pieces = [KUBECONFIG[:cut], KUBECONFIG[cut:]]
        self.assertEqual(self.feed_all(masker, pieces), "***\n")

    def test_secrets_added_between_pieces(self) -> None:
        stream = StreamMasker()
        first = stream.feed(Masker(["sk-live-123456"]), "stdout", "a sk-live-123456 b correct-horse-")
        rest = stream.feed(Masker(["sk-live-123456", "correct-horse-battery"]), "stdout", "battery c\n")
        tail = "".join(t for _, t in stream.flush(Masker(["sk-live-123456", "correct-horse-battery"])))
        self.assertEqual(first + rest + tail, "a *** b *** c\n")

    @settings(max_examples=150, deadline=None)
    @given(st.lists(st.sampled_from(["x", "\n", " ", "a\"b", PEM[:40], json.dumps(PEM)[30:90], "-----",
                                     KUBECONFIG, json.dumps(KUBECONFIG), base64.b64encode(PEM.encode()).decode()[:200],
                                     base64.encodebytes(PEM.encode()).decode(), PEM, "sk-live-0123456789abcdef"]),
                    max_size=8).map("".join),
           st.lists(st.integers(min_value=0, max_value=5000), max_size=6))
    def test_pieces_give_what_the_whole_gives(self, text: str, cuts: list[int]) -> None:
        masker = Masker([PEM, KUBECONFIG, "sk-live-0123456789abcdef"])
        points = sorted({min(c, len(text)) for c in cuts})
        pieces = [text[a:b] for a, b in zip([0, *points], [*points, len(text)])]
        self.assertEqual(self.feed_all(masker, pieces), masker.mask(text))


class RedactCredentialsTests(unittest.TestCase):
    """run.queued shows a cell's options, never a credential written into them."""

    def test_literal_credentials_become_masked(self) -> None:
        from spinrt.secrets import redact_credentials

        options = {
            "url": "https://api.example/x", "method": "POST",
            "auth": {"bearer": "tok-1"}, "json": {"name": "disk", "token_count": 3},
            "headers": {"Authorization": "Token t", "proxy-authorization": "Basic x", "COOKIE": "sid=1",
                        "X-Api-Key": "k", "X-Auth-Token": "t", "X-Trace": "keep", "Accept": "application/json"},
            "api_key": "sk-1", "password": "p", "passphrase": "q", "private_key": "-----BEGIN",
            "nested": [{"secret": "s"}, {"plain": "v"}],
        }
        shown = redact_credentials(options)
        self.assertEqual(shown["auth"], {"bearer": "***"})
        self.assertEqual(shown["headers"], {"Authorization": "***", "proxy-authorization": "***", "COOKIE": "***",
                                            "X-Api-Key": "***", "X-Auth-Token": "***", "X-Trace": "keep",
                                            "Accept": "application/json"})
        for key in ("api_key", "password", "passphrase", "private_key"):
            self.assertEqual(shown[key], "***", key)
        self.assertEqual(shown["nested"], [{"secret": "***"}, {"plain": "v"}])
        self.assertEqual(shown["json"], {"name": "disk", "token_count": 3})  # not a credential by name
        self.assertEqual(shown["url"], options["url"])
        self.assertEqual(options["auth"], {"bearer": "tok-1"})  # the cell itself is untouched

    def test_basic_auth_keeps_the_user_and_templates_stay_visible(self) -> None:
        from spinrt.secrets import redact_credentials

        self.assertEqual(redact_credentials({"auth": {"basic": ["alice", "pw"]}}), {"auth": {"basic": ["alice", "***"]}})
        ref = {"auth": {"bearer": "{{secret:TOKEN}}"}, "api_key": "{{ runtime_env:KEY }}", "token": ""}
        self.assertEqual(redact_credentials(ref), ref)
