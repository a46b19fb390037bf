"""Tests for spinrt.templates: placeholder grammar, expansion, escapes, errors."""

from __future__ import annotations

import json
import pickle
import shlex
import time
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from spinrt.templates import (
    RESERVED_NAMES,
    Placeholder,
    TemplateError,
    expand,
    expand_cell,
    expand_cell_with_secrets,
    expand_value,
    expand_with_secrets,
    find_placeholders,
    reserved_name,
    variable_names,
)

SECRET = "s3cr3t-VALUE"


class FakeResolver:
    """A resolver over three dicts that records every lookup."""

    def __init__(
        self,
        variables: dict[str, object] | None = None,
        env: dict[str, str] | None = None,
        secrets: dict[str, str] | None = None,
    ) -> None:
        self.variables = variables or {}
        self.environ = env or {}
        self.secrets = secrets or {}
        self.calls: list[tuple[str, str]] = []

    def variable(self, name: str) -> object:
        self.calls.append(("variable", name))
        return self.variables[name]

    def env(self, name: str) -> str:
        self.calls.append(("env", name))
        return self.environ[name]

    def secret(self, name: str) -> str:
        self.calls.append(("secret", name))
        return self.secrets[name]


class Host:
    """An object reached through attribute steps."""

    def __init__(self) -> None:
        self.name = "web-1"
        self.ports = [80, 443]
        self._token = SECRET

    @property
    def broken(self) -> str:
        raise ValueError(SECRET)


def resolver() -> FakeResolver:
    return FakeResolver(
        variables={
            "name": "world",
            "count": 3,
            "ratio": 0.5,
            "flag": True,
            "nothing": None,
            "hosts": ["alpha", "beta gamma"],
            "cfg": {"db": {"host": "db.local", "ports": [5432, 5433]}, "0": "str-zero", 1: "int-one"},
            "intkeys": {7: "seven"},
            "host": Host(),
            "result": {"json": {"items": [{"id": 42}]}, "status_code": 200},
            "key_name": "DB_PASS",
            "not_a_name": 12,
            "conn": {"secret": "API_KEY"},
            "café": "unicode",
            "_private": "underscore-root",
            "github": {"sha": "abc123"},
        },
        env={"HOME": "/home/spin", "EMPTY": ""},
        secrets={"DB_PASS": SECRET, "API_KEY": "key with 'quote'", "QUOTED": 'pa"ss\\word', "BLANK": ""},
    )


class FailingResolver:
    """Any lookup is a test failure: for text that must pass through."""

    def variable(self, name: str) -> object:
        raise AssertionError(f"variable {name} looked up")

    def env(self, name: str) -> str:
        raise AssertionError(f"env {name} looked up")

    def secret(self, name: str) -> str:
        raise AssertionError(f"secret {name} looked up")


class ShapeTests(unittest.TestCase):
    def check(self, text: str, expected: str) -> None:
        self.assertEqual(expand(text, resolver()), expected)

    def test_plain(self) -> None:
        self.check("hello {{name}}!", "hello world!")

    def test_spaces_and_tabs_inside_braces(self) -> None:
        self.check("{{ name }}|{{  name}}|{{name\t}}|{{\tname \t}}", "world|world|world|world")

    def test_several_and_adjacent(self) -> None:
        self.check("{{name}}{{name}} {{count}}", "worldworld 3")

    def test_dict_path(self) -> None:
        self.check("{{cfg.db.host}}", "db.local")

    def test_list_index(self) -> None:
        self.check("{{hosts.0}},{{hosts.1}}", "alpha,beta gamma")

    def test_nested_list_in_dict(self) -> None:
        self.check("{{cfg.db.ports.1}} {{result.json.items.0.id}}", "5433 42")

    def test_int_step_prefers_string_key(self) -> None:
        self.check("{{cfg.0}}", "str-zero")

    def test_int_step_falls_back_to_int_key(self) -> None:
        self.check("{{cfg.1}} {{intkeys.7}}", "int-one seven")

    def test_attribute_path(self) -> None:
        self.check("{{host.name}} {{host.ports.1}}", "web-1 443")

    def test_unicode_identifier(self) -> None:
        self.check("{{café}}", "unicode")

    def test_underscore_root_name_is_a_variable(self) -> None:
        self.check("{{_private}}", "underscore-root")

    def test_braces_around_placeholder(self) -> None:
        self.check("{{{name}}}", "{world}")
        self.check('{"k": {{name|json}}}', '{"k": "world"}')

    def test_placeholder_is_one_line(self) -> None:
        self.check("{{\nname}} {{name\n}}", "{{\nname}} {{name\n}}")

    def test_leading_zero_step_is_not_a_placeholder(self) -> None:
        self.check("{{hosts.01}}", "{{hosts.01}}")

    def test_github_actions_expression_is_not_a_placeholder(self) -> None:
        # PROTOCOL.md 14: even though a variable 'github' exists.
        self.check("${{ github.sha }}", "${{ github.sha }}")


class KindTests(unittest.TestCase):
    def test_runtime_env(self) -> None:
        self.assertEqual(expand("{{runtime_env:HOME}}/x", resolver()), "/home/spin/x")

    def test_runtime_env_empty_value(self) -> None:
        self.assertEqual(expand("[{{runtime_env:EMPTY}}]", resolver()), "[]")

    def test_secret(self) -> None:
        self.assertEqual(expand("pw={{secret:DB_PASS}}", resolver()), f"pw={SECRET}")

    def test_secret_var(self) -> None:
        r = resolver()
        self.assertEqual(expand("{{secret_var:key_name}}", r), SECRET)
        self.assertEqual(r.calls, [("variable", "key_name"), ("secret", "DB_PASS")])

    def test_secret_var_with_path(self) -> None:
        self.assertEqual(expand("{{secret_var:conn.secret}}", resolver()), "key with 'quote'")

    def test_spaces_around_colon(self) -> None:
        self.assertEqual(expand("{{ secret : DB_PASS }}{{runtime_env: HOME}}", resolver()), SECRET + "/home/spin")

    def test_names_with_dots_and_dashes(self) -> None:
        r = FakeResolver(env={"my.var-1": "v"}, secrets={"db-pass.prod": "p"})
        self.assertEqual(expand("{{runtime_env:my.var-1}}{{secret:db-pass.prod}}", r), "vp")

    def test_kind_words_alone_are_variables(self) -> None:
        r = FakeResolver(variables={"secret": "a", "runtime_env": "b", "secret_var": "c"})
        self.assertEqual(expand("{{secret}}{{runtime_env}}{{secret_var}}", r), "abc")

    def test_unknown_prefix_is_not_a_placeholder(self) -> None:
        self.assertEqual(expand("{{env:HOME}} {{SECRET:X}}", FailingResolver()), "{{env:HOME}} {{SECRET:X}}")


class ValueTextTests(unittest.TestCase):
    def check(self, value: object, expected: str, template: str = "{{v}}") -> None:
        self.assertEqual(expand(template, FakeResolver({"v": value})), expected)

    def test_scalars(self) -> None:
        self.check("text", "text")
        self.check(3, "3")
        self.check(-2.5, "-2.5")
        self.check(True, "true")
        self.check(False, "false")
        self.check(None, "null")

    def test_containers_as_json(self) -> None:
        self.check({"a": [1, None]}, '{"a": [1, null]}')
        self.check([1, "x"], '[1, "x"]')
        self.check((1, 2), "[1, 2]")
        self.check({"k": "é"}, '{"k": "é"}')

    def test_other_objects_use_str(self) -> None:
        class Thing:
            def __str__(self) -> str:
                return "a thing"

        self.check(Thing(), "a thing")
        self.check({1, 2} - {1}, "{2}")

    def test_unencodable_container_falls_back_to_str_inside(self) -> None:
        class Thing:
            def __str__(self) -> str:
                return "T"

        self.check({"t": Thing()}, '{"t": "T"}')
        self.check(Thing(), '"T"', "{{v|json}}")

    def test_circular_value_is_an_error(self) -> None:
        loop: list[object] = []
        loop.append(loop)
        e = self.assertRaises(TemplateError, expand, "{{v}}", FakeResolver({"v": loop}))
        self.assertEqual(e.placeholder, "{{v}}")


class FilterTests(unittest.TestCase):
    def test_shquote_simple(self) -> None:
        self.assertEqual(expand("echo {{name|shquote}}", resolver()), "echo world")

    def test_shquote_spaces_quotes_newlines_empty(self) -> None:
        for value, quoted in [
            ("a b", "'a b'"),
            ("it's", "'it'\"'\"'s'"),
            ("line1\nline2", "'line1\nline2'"),
            ("", "''"),
            ("$(rm -rf /)", "'$(rm -rf /)'"),
        ]:
            out = expand("{{v|shquote}}", FakeResolver({"v": value}))
            self.assertEqual(out, quoted)
            self.assertEqual(shlex.split(out), [value])

    def test_shquote_of_non_string_quotes_its_text(self) -> None:
        self.assertEqual(expand("{{cfg.db|shquote}}", resolver()), "'{\"host\": \"db.local\", \"ports\": [5432, 5433]}'")
        self.assertEqual(expand("{{count|shquote}}", resolver()), "3")

    def test_json_of_str_and_dict(self) -> None:
        self.assertEqual(expand("{{name|json}}", resolver()), '"world"')
        self.assertEqual(expand('{{v|json}}', FakeResolver({"v": 'say "hi"\n'})), '"say \\"hi\\"\\n"')
        self.assertEqual(expand("{{cfg.db|json}}", resolver()), '{"host": "db.local", "ports": [5432, 5433]}')
        self.assertEqual(expand("{{nothing|json}} {{count|json}}", resolver()), "null 3")

    def test_json_keeps_non_ascii(self) -> None:
        self.assertEqual(expand("{{v|json}}", FakeResolver({"v": "naïve ☃"})), '"naïve ☃"')

    def test_spaces_around_filter(self) -> None:
        self.assertEqual(expand("{{ secret:DB_PASS | json }}", resolver()), json.dumps(SECRET))
        self.assertEqual(expand("{{name |shquote}}{{name| json}}", resolver()), 'world"world"')

    def test_every_kind_with_every_filter(self) -> None:
        kinds = {
            "hosts.1": "beta gamma",
            "runtime_env:HOME": "/home/spin",
            "secret:API_KEY": "key with 'quote'",
            "secret_var:key_name": SECRET,
        }
        for body, raw in kinds.items():
            self.assertEqual(expand(f"{{{{{body}|json}}}}", resolver()), json.dumps(raw))
            self.assertEqual(expand(f"{{{{ {body} | shquote }}}}", resolver()), shlex.quote(raw))
            self.assertEqual(expand(f"{{{{{body}|json|shquote}}}}", resolver()), shlex.quote(json.dumps(raw)))

    def test_chain_applies_left_to_right(self) -> None:
        self.assertEqual(expand("{{hosts.1|shquote|json}}", resolver()), json.dumps("'beta gamma'"))
        self.assertEqual(expand("{{hosts.1|json|json}}", resolver()), json.dumps(json.dumps("beta gamma")))

    def test_unknown_filter(self) -> None:
        r = resolver()
        e = self.assertRaises(TemplateError, expand, "{{ name | upper }}", r)
        self.assertEqual(str(e), "cannot expand {{ name | upper }}: unknown filter 'upper' (known: json, shquote)")
        self.assertEqual(r.calls, [])

    def test_filter_with_arguments_is_not_a_placeholder(self) -> None:
        text = "{{ x | default('y') }} {{ name | json() }}"
        self.assertEqual(expand(text, FailingResolver()), text)


class EscapeTests(unittest.TestCase):
    def test_backslash_keeps_placeholder(self) -> None:
        self.assertEqual(expand(r"a \{{name}} b", resolver()), "a {{name}} b")

    def test_escaped_unknown_names_do_not_fail(self) -> None:
        self.assertEqual(expand(r"\{{nope}} \{{secret:NOPE|json}}", FailingResolver()), "{{nope}} {{secret:NOPE|json}}")

    def test_double_backslash_is_one_backslash_then_value(self) -> None:
        self.assertEqual(expand(r"\\{{name}}", resolver()), "\\world")

    def test_odd_runs_keep_placeholder(self) -> None:
        self.assertEqual(expand(r"\\\{{name}}", resolver()), r"\{{name}}")
        self.assertEqual(expand(r"\\\\{{name}}", resolver()), r"\\world")

    def test_backslashes_elsewhere_untouched(self) -> None:
        text = r"printf 'a\nb\\c' \{x} \{{.Names}} \\{{ json . }} C:\dir\ "
        self.assertEqual(expand(text, FailingResolver()), text)

    def test_backslash_after_placeholder_untouched(self) -> None:
        self.assertEqual(expand(r"{{name}}\ {{name}}\\", resolver()), r"world\ world\\")

    def test_github_actions_escape(self) -> None:
        self.assertEqual(expand(r"run: echo $\{{ github.sha }}", FailingResolver()), "run: echo ${{ github.sha }}")

    def test_escaped_not_found(self) -> None:
        self.assertEqual([p.name for p in find_placeholders(r"\{{a}} {{b}} \\{{c}}")], ["b", "c"])
        self.assertEqual(variable_names(r"\{{a}} \{{secret_var:k}}"), set())


PASS_THROUGH = [
    "docker ps --format '{{.Names}}'",
    "docker inspect -f '{{ json . }}' web",
    "docker ps --format 'table {{.ID}}\\t{{.Image}}'",
    "image: {{ .Values.image }}",
    "{{- if .Values.enabled }}\nx: 1\n{{- end }}",
    "{{ range $i, $e := .Items }}{{ $e.Name }}{{ end -}}",
    '{{ template "base" . }}',
    "{% for h in hosts %}{{ h | default('none') }}{% endfor %}",
    "{# comment #} {{ 'literal' }} {{ \"q\" }} {{ 1 + 2 }} {{ a[0] }} {{ f(x) }}",
    "{{}} {{ }} {{.}} {{0abc}} {{a..b}} {{a.}} {{a.-1}} {{a b}} {{ secret: }} {{secret:1X}}",
    "{ {name} } {name} }}name{{ {{name} {name}}",
    "kubectl get pods -o go-template='{{range .items}}{{.metadata.name}}{{\"\\n\"}}{{- end}}'",
    "{{{{{{ }}}}}} {{{ }}}",
    "no braces at all, just $HOME and ${VAR} and %s",
]


class PassThroughTests(unittest.TestCase):
    def test_foreign_template_text_is_unchanged(self) -> None:
        for text in PASS_THROUGH:
            self.assertEqual(expand(text, FailingResolver()), text)
            self.assertEqual(find_placeholders(text), [])

    def test_go_end_keyword_passes_and_its_old_escape_still_works(self) -> None:
        self.assertEqual(expand("{{ if .x }}y{{ end }}", FailingResolver()), "{{ if .x }}y{{ end }}")
        self.assertEqual(expand(r"{{ if .x }}y\{{ end }}", FailingResolver()), "{{ if .x }}y{{ end }}")

    def test_mixed_with_a_real_placeholder(self) -> None:
        text = "docker ps --format '{{.Names}}' --filter name={{name|shquote}} {{ json . }}"
        self.assertEqual(expand(text, resolver()), "docker ps --format '{{.Names}}' --filter name=world {{ json . }}")


def keyword_resolver() -> FakeResolver:
    """The usual variables plus one named after every Go keyword (as a Python
    kernel global could be): none of them may ever be looked up."""
    r = resolver()
    r.variables.update({kw: f"VALUE-OF-{kw}" for kw in RESERVED_NAMES})
    return r


class ForeignTemplateTests(unittest.TestCase):
    """PROTOCOL.md 14: Go keywords, trim markers, Go comments and ``${{`` are
    never placeholders; a bare undefined name still fails."""

    def passes(self, *texts: str) -> None:
        for text in texts:
            r = keyword_resolver()
            self.assertEqual(expand(text, r), text)
            self.assertEqual(r.calls, [], text)
            self.assertEqual(find_placeholders(text), [], text)
            self.assertEqual(variable_names(text), set(), text)

    def test_issue_input(self) -> None:
        self.passes("echo '{{range .items}}{{.metadata.name}}{{end}}'")
        self.assertEqual(
            expand("echo '{{range .items}}{{.metadata.name}}{{end}}'", FailingResolver()),
            "echo '{{range .items}}{{.metadata.name}}{{end}}'",
        )

    def test_reserved_names_are_the_go_keywords(self) -> None:
        self.assertEqual(
            RESERVED_NAMES,
            {"end", "else", "range", "if", "with", "define", "template", "block", "break", "continue", "nil"},
        )
        self.assertIsInstance(RESERVED_NAMES, frozenset)
        for kw in RESERVED_NAMES:
            self.assertTrue(reserved_name(kw))
        for name in ("End", "END", "ending", "end_", "_end", "iffy", "name", "secret", "runtime_env", "", " end"):
            self.assertFalse(reserved_name(name), name)

    def test_every_keyword_in_every_spelling(self) -> None:
        for kw in sorted(RESERVED_NAMES):
            self.passes(
                f"{{{{{kw}}}}}", f"{{{{ {kw} }}}}", f"{{{{\t{kw}  }}}}", f"a{{{{{kw}}}}}b\n",
                f"{{{{{kw}.x.0}}}}", f"{{{{ {kw} | json }}}}", f"{{{{{kw}|shquote|json}}}}",
                f"{{{{ {kw} | bogus }}}}", f"{{{{{{{kw}}}}}}}",
            )

    def test_a_variable_named_like_a_keyword_is_not_read(self) -> None:
        r = FakeResolver({"end": "X", "else": "Y"})
        self.assertEqual(expand("{{ end }} {{else}} {{end.x}}", r), "{{ end }} {{else}} {{end.x}}")
        self.assertEqual(r.calls, [])

    def test_keywords_are_case_sensitive_and_exact(self) -> None:
        r = FakeResolver({"End": "a", "ending": "b", "if_": "c", "_nil": "d", "rangeX": "e"})
        self.assertEqual(expand("{{End}} {{ ending }} {{if_}} {{_nil}} {{rangeX}}", r), "a b c d e")
        for text in ("{{End}}", "{{ END }}", "{{ending}}", "{{ nil_ }}", "{{withx}}"):
            e = self.assertRaises(TemplateError, expand, text, FakeResolver())
            self.assertEqual(e.placeholder, text)

    def test_secret_var_of_a_keyword_fails_without_a_lookup(self) -> None:
        r = keyword_resolver()
        e = self.assertRaises(TemplateError, expand, "{{secret_var: end }}", r)
        self.assertEqual((e.placeholder, e.reason), ("{{secret_var: end }}", "'end' is a Go template keyword, never a variable name"))
        self.assertEqual(r.calls, [])
        self.assertEqual(variable_names("{{secret_var:end}} {{secret_var:range.x}}"), set())

    def test_go_actions(self) -> None:
        self.passes(
            "{{else if .x}}", "{{ else if .x }}", "{{ if .x }}", '{{if eq .a "b"}}', "{{ with .x }}",
            '{{ define "x" }}', '{{ template "x" . }}', '{{ block "x" . }}{{ end }}',
            "{{ range $i, $e := .Items }}{{ $e }}{{ end }}", "{{ $x := 1 }}{{ $x }}",
            "{{ break }}{{continue}}{{ nil }}", '{{ .x | printf "%q" }}', '{{ index .m "k" }}',
            "{{ len .items }}", "{{ if and .a (not .b) }}y{{ else }}n{{ end }}",
        )

    def test_trim_markers(self) -> None:
        self.passes(
            "{{- end -}}", "{{- end}}", "{{end -}}", "{{-end}}", "{{- else -}}",
            "{{- name -}}", "{{- name}}", "{{name -}}", "{{ -name }}", "{{-  name}}",
            "{{- if .x }}\nx: 1\n{{- end }}", "{{ name\t-}}", "{{- secret:DB_PASS -}}",
        )

    def test_comments(self) -> None:
        self.passes(
            "{{/* c */}}", "{{- /* c */ -}}", "{{/* multi\nline\n*/}}", "{{-\t/* c */\t-}}",
            "{{/* {{name}} {{nope}} \\{{x}} \\\\{{y}} {{secret:NOPE}} */}}",
            "{{- /* {{ nope }}\n {{end}} */ -}}",
            "{{/* a }} b {{nope}} */}}",
        )
        self.assertEqual(expand("{{/* {{nope}} */}}", FailingResolver()), "{{/* {{nope}} */}}")

    def test_comment_next_to_real_placeholders(self) -> None:
        text = "{{name}}{{/* {{nope}} */}}{{name}} {{- /* {{name}} */ -}}\\{{name}}\n{{/**/}}{{ count }}"
        self.assertEqual(expand(text, resolver()), "world{{/* {{nope}} */}}world {{- /* {{name}} */ -}}{{name}}\n{{/**/}}3")

    def test_what_is_not_a_go_comment_does_not_hide_placeholders(self) -> None:
        # Unclosed, or "*/" not at the closing braces: Go rejects it, so the
        # rest of the text is read as usual and a typo still fails.
        self.assertEqual(expand("{{/* open {{name}}", resolver()), "{{/* open world")
        self.assertEqual(expand("{{/* a */ b {{name}} */}}", resolver()), "{{/* a */ b world */}}")
        e = self.assertRaises(TemplateError, expand, "{{/* open\n{{hostnme}}", resolver())
        self.assertEqual(e.placeholder, "{{hostnme}}")
        e = self.assertRaises(TemplateError, expand, "{{/* c */}} {{hostnme}} {{/* d */}}", resolver())
        self.assertEqual(e.placeholder, "{{hostnme}}")

    def test_github_actions_and_other_dollar_expressions(self) -> None:
        self.passes(
            "${{ github.sha }}", "${{secrets.X}}", "${{ secrets.TOKEN }}", "${{ github.event.pull_request.number }}",
            "${{ matrix.os }}", "${{name}}", "${{ name | json }}", "${{ secret:DB_PASS }}", "${{runtime_env:HOME}}",
            "${{secret_var:key_name}}", "$${{ x }}", "\\${{ x }}", "run: echo ${{ env.A }}-${{ env.B }}\n",
        )

    def test_dollar_only_directly_before(self) -> None:
        self.assertEqual(expand("$ {{name}} $\t{{name}} ${{{name}}}", resolver()), "$ world $\tworld ${world}")
        self.assertEqual(expand("${{ github.sha }} {{ github.sha }}", resolver()), "${{ github.sha }} abc123")

    def test_backslash_escapes_keep_working(self) -> None:
        r = FailingResolver()
        self.assertEqual(expand("$\\{{ github.sha }}", r), "${{ github.sha }}")
        self.assertEqual(expand("$\\\\{{name}}", resolver()), "$\\world")
        self.assertEqual(expand("\\{{ end }}", r), "{{ end }}")
        self.assertEqual(expand("\\\\{{end}}", r), "\\{{end}}")
        self.assertEqual(expand("\\\\\\{{end}}", r), "\\{{end}}")
        self.assertEqual(expand("\\{{- end }} \\{{/* c */}}", r), "\\{{- end }} \\{{/* c */}}")

    def test_jinja(self) -> None:
        self.passes(
            "{% for h in hosts %}x{% endfor %}", "{%- if a == 'b' -%}y{%- endif %}", "{# a comment #}",
            "{%- set x = 1 -%}", "{{ x | default('y') }}", "{{- x -}}", "{{ loop.index0 + 1 }}",
            "{% raw %}{{ '{{' }}{% endraw %}",
        )
        # A Jinja expression of the placeholder shape is a placeholder.
        self.assertEqual(expand("{% if x %}{{ name }}{% endif %}", resolver()), "{% if x %}world{% endif %}")
        self.assertRaises(TemplateError, expand, "{% for item in xs %}{{ item }}{% endfor %}", resolver())
        self.assertEqual(expand("{% for item in xs %}\\{{ item }}{% endfor %}", resolver()), "{% for item in xs %}{{ item }}{% endfor %}")

    def test_helm(self) -> None:
        self.passes(
            '{{ .Values.x | default "y" }}', '{{ include "chart.labels" . | nindent 4 }}',
            "{{- toYaml .Values.resources | nindent 12 }}", "{{ .Release.Name }}-{{ .Chart.Name }}",
            "{{- with .Values.nodeSelector }}\nnodeSelector:\n  {{- toYaml . | nindent 8 }}\n{{- end }}",
            '{{- define "chart.name" -}}\n{{- default .Chart.Name .Values.nameOverride | trunc 63 }}\n{{- end }}',
        )

    def test_multiline_go_template_with_real_placeholders(self) -> None:
        text = (
            "kubectl get pods -n {{ns|shquote}} -o go-template='\n"
            "{{- range .items -}}\n"
            '  {{ .metadata.name }}{{ "\\t" }}{{ if .status.podIP }}{{ .status.podIP }}{{ else }}none{{ end }}\n'
            "{{/* skip {{ns}} */}}{{ end -}}' | grep {{ host.name }}"
        )
        r = FakeResolver({"ns": "kube system", "host": Host()})
        self.assertEqual(
            expand(text, r),
            text.replace("{{ns|shquote}}", "'kube system'").replace("{{ host.name }}", "web-1"),
        )
        self.assertEqual(r.calls, [("variable", "ns"), ("variable", "host")])
        self.assertEqual(variable_names(text), {"ns", "host"})

    def test_typos_next_to_go_text_still_fail(self) -> None:
        for text, bad in [
            ("{{hostnme}}", "{{hostnme}}"),
            ("echo {{ hostnme }}", "{{ hostnme }}"),
            ("{{range .items}}{{hostnme.x}}{{end}}", "{{hostnme.x}}"),
            ("{{- if .x }}{{ hostnme|shquote }}{{- end }}", "{{ hostnme|shquote }}"),
            ("${{ github.sha }} {{hostnme}}", "{{hostnme}}"),
            ("{{/* c */}}\n{{ end }}\n{{ hostnme }}", "{{ hostnme }}"),
        ]:
            e = self.assertRaises(TemplateError, expand, text, keyword_resolver())
            self.assertEqual(e.placeholder, bad)
            self.assertEqual(e.reason, r"unknown variable 'hostnme' (write \{{ to keep the braces)")


class ErrorTests(unittest.TestCase):
    def fails(self, text: str, reason: str, r: Any = None) -> TemplateError:
        e = self.assertRaises(TemplateError, expand, text, r or resolver())
        self.assertEqual(e.reason, reason)
        self.assertIn(e.placeholder, text)
        self.assertEqual(str(e), f"cannot expand {e.placeholder}: {reason}")
        for value in resolver().secrets.values():
            if value:
                self.assertNotIn(value, str(e))
        return e

    def test_unknown_variable(self) -> None:
        e = self.fails("x {{ nope.a|json }} y", r"unknown variable 'nope' (write \{{ to keep the braces)")
        self.assertEqual(e.placeholder, "{{ nope.a|json }}")

    def test_unset_env(self) -> None:
        self.fails("{{runtime_env:NOPE}}", "environment variable 'NOPE' is not set")

    def test_unknown_secret(self) -> None:
        self.fails("{{secret:NOPE|shquote}}", "secret 'NOPE' is not set (secrets.set, or the runtime's environment)")

    def test_secret_var_with_unknown_variable(self) -> None:
        self.fails("{{secret_var:nope}}", r"unknown variable 'nope' (write \{{ to keep the braces)")

    def test_secret_var_naming_unknown_secret(self) -> None:
        r = resolver()
        r.variables["key_name"] = "NO_SUCH_SECRET"
        e = self.fails("{{secret_var:key_name}}", "no secret has the name held in variable 'key_name'", r)
        self.assertNotIn("NO_SUCH_SECRET", str(e))

    def test_secret_var_holding_non_string(self) -> None:
        self.fails("{{secret_var:not_a_name}}", "variable 'not_a_name' does not hold a secret name (a string)")

    def test_missing_key(self) -> None:
        self.fails("{{cfg.db.user}}", "'cfg.db' has no key 'user'")

    def test_missing_int_key(self) -> None:
        self.fails("{{cfg.9}}", "'cfg' has no key '9'")

    def test_index_out_of_range(self) -> None:
        self.fails("{{hosts.2}}", "index 2 is out of range for 'hosts'")

    def test_name_step_on_list(self) -> None:
        self.fails("{{hosts.first}}", "'hosts' is a sequence, 'first' is not an index")

    def test_index_step_on_object_or_string(self) -> None:
        self.fails("{{host.0}}", "'host' (Host) cannot be indexed")
        self.fails("{{name.0}}", "'name' (str) cannot be indexed")

    def test_private_attribute(self) -> None:
        self.fails("{{host._token}}", "attribute '_token' is private")
        self.fails("{{host.__class__}}", "attribute '__class__' is private")

    def test_missing_attribute(self) -> None:
        self.fails("{{host.nope}}", "'host' (Host) has no attribute 'nope'")

    def test_raising_property_does_not_leak(self) -> None:
        self.fails("{{host.broken}}", "reading host.broken failed (ValueError)")

    def test_first_error_in_text_order_wins(self) -> None:
        e = self.fails("{{name}} {{a}} {{secret:B}}", r"unknown variable 'a' (write \{{ to keep the braces)")
        self.assertEqual(e.placeholder, "{{a}}")

    def test_error_after_secret_does_not_leak_it(self) -> None:
        self.fails("{{secret:DB_PASS}} {{nope}}", r"unknown variable 'nope' (write \{{ to keep the braces)")

    def test_pickles(self) -> None:
        e = pickle.loads(pickle.dumps(TemplateError("{{x}}", "why")))
        self.assertEqual((e.placeholder, e.reason, str(e)), ("{{x}}", "why", "cannot expand {{x}}: why"))


class FindTests(unittest.TestCase):
    def test_fields(self) -> None:
        text = "a {{ cfg.db.ports.0 | json|shquote }} {{runtime_env:HOME}} {{secret:DB_PASS}} {{secret_var: conn.secret}}"
        found = find_placeholders(text)
        self.assertEqual(
            found,
            [
                Placeholder("{{ cfg.db.ports.0 | json|shquote }}", "var", "cfg", ("db", "ports", 0), ("json", "shquote"), 2, 37),
                Placeholder("{{runtime_env:HOME}}", "env", "HOME", (), (), 38, 58),
                Placeholder("{{secret:DB_PASS}}", "secret", "DB_PASS", (), (), 59, 77),
                Placeholder("{{secret_var: conn.secret}}", "secret_var", "conn", ("secret",), (), 78, 105),
            ],
        )
        for p in found:
            self.assertEqual(text[p.start : p.end], p.text)

    def test_placeholder_is_frozen(self) -> None:
        p = find_placeholders("{{a}}")[0]
        self.assertRaises(AttributeError, setattr, p, "name", "b")

    def test_variable_names(self) -> None:
        text = "{{a.b}} {{ c|json }} {{secret_var:d}} {{secret:E}} {{runtime_env:F}} {{a}}"
        self.assertEqual(variable_names(text), {"a", "c", "d"})

    def test_variable_names_of_options(self) -> None:
        options = {"{{k}}": "{{a}}", "env": {"X": "{{b.c}}"}, "args": ["{{c}}", 3, ("{{secret_var:d}}",)]}
        self.assertEqual(variable_names(options), {"a", "b", "c", "d"})
        self.assertEqual(variable_names(5), set())


class ExpandValueTests(unittest.TestCase):
    def test_nested_options(self) -> None:
        options = {
            "url": "https://{{cfg.db.host}}/x",
            "{{name}}": "key untouched",
            "headers": {"Authorization": "Bearer {{secret:DB_PASS}}", "n": 5},
            "list": ["{{hosts.0}}", 1.5, None, True, ["{{count}}"]],
            "tuple": ("{{name}}", 2),
            "timeout_s": 30,
        }
        out = expand_value(options, resolver())
        self.assertEqual(
            out,
            {
                "url": "https://db.local/x",
                "{{name}}": "key untouched",
                "headers": {"Authorization": f"Bearer {SECRET}", "n": 5},
                "list": ["alpha", 1.5, None, True, ["3"]],
                "tuple": ("world", 2),
                "timeout_s": 30,
            },
        )
        self.assertIsInstance(out["tuple"], tuple)
        self.assertEqual(options["url"], "https://{{cfg.db.host}}/x")  # input not mutated

    def test_scalars_returned_as_is(self) -> None:
        marker = object()
        self.assertIs(expand_value(marker, FailingResolver()), marker)
        self.assertEqual(expand_value("{{name}}", resolver()), "world")

    def test_error_inside_options(self) -> None:
        e = self.assertRaises(TemplateError, expand_value, {"a": ["ok", "{{nope}}"]}, resolver())
        self.assertEqual(e.placeholder, "{{nope}}")

    def test_expand_cell(self) -> None:
        source, options = expand_cell("echo {{name|shquote}}", {"cwd": "{{runtime_env:HOME}}", "timeout_s": 5}, resolver())
        self.assertEqual((source, options), ("echo world", {"cwd": "/home/spin", "timeout_s": 5}))

    def test_expand_cell_with_secrets(self) -> None:
        source, options, used = expand_cell_with_secrets(
            "curl -u u:{{secret:DB_PASS|shquote}}", {"auth": {"bearer": "{{secret_var:conn.secret}}"}}, resolver()
        )
        self.assertEqual(source, f"curl -u u:{SECRET}")
        self.assertEqual(options, {"auth": {"bearer": "key with 'quote'"}})
        self.assertEqual(used, {SECRET, "key with 'quote'"})

    def test_expand_cell_source_errors_first(self) -> None:
        e = self.assertRaises(TemplateError, expand_cell, "{{a}}", {"x": "{{b}}"}, resolver())
        self.assertEqual(e.placeholder, "{{a}}")


class SecretsUsedTests(unittest.TestCase):
    def test_reports_secret_values(self) -> None:
        text, used = expand_with_secrets("{{secret:DB_PASS}} {{secret_var:conn.secret}} {{name}} {{runtime_env:HOME}}", resolver())
        self.assertEqual(text, f"{SECRET} key with 'quote' world /home/spin")
        self.assertEqual(used, {SECRET, "key with 'quote'"})

    def test_no_secrets(self) -> None:
        self.assertEqual(expand_with_secrets("{{name}}", resolver()), ("world", set()))

    def test_empty_secret_not_reported(self) -> None:
        self.assertEqual(expand_with_secrets("[{{secret:BLANK}}]", resolver()), ("[]", set()))

    def test_escaped_secret_not_looked_up(self) -> None:
        self.assertEqual(expand_with_secrets(r"\{{secret:DB_PASS}}", FailingResolver()), ("{{secret:DB_PASS}}", set()))

    def test_written_form_reported_when_a_filter_changes_it(self) -> None:
        text, used = expand_with_secrets("{{secret:QUOTED|json}}", resolver())
        self.assertEqual(text, '"pa\\"ss\\\\word"')
        self.assertEqual(used, {'pa"ss\\word', '"pa\\"ss\\\\word"'})

    def test_shquote_form_reported_when_it_splits_the_value(self) -> None:
        text, used = expand_with_secrets("{{secret:API_KEY|shquote}}", resolver())
        self.assertEqual(text, "'key with '\"'\"'quote'\"'\"''")
        self.assertEqual(used, {"key with 'quote'", text})


class PerformanceTests(unittest.TestCase):
    """Adversarial 1 MB inputs must not backtrack catastrophically."""

    def test_linear_time(self) -> None:
        r = FakeResolver({"a": {"a": 1}})
        inputs = [
            "{" * 1_000_000,
            "{{ a." * 200_000,
            "{{ a" + " " * 1_000_000,
            "{{a" + ".a" * 500_000 + " x",
            "{{ a |" * 200_000,
            "\\" * 1_000_000 + "{{a.a}}",
            "\\{{a}}" * 150_000,
            "{{ secret : " + "A" * 1_000_000,
            ("{{a" + " \t" * 500) * 1000,
            "{{/*" * 250_000 + "*/ x {{a}}",
            "{{/* */" * 150_000,
            "{{- /* {{a}}" * 100_000 + "*/}}",
            "${{a}}" * 150_000,
        ]
        for text in inputs:
            started = time.perf_counter()
            try:
                expand(text, r)
            except TemplateError:
                pass
            find_placeholders(text)
            self.assertLess(time.perf_counter() - started, 2.0, text[:20])


# -- properties ---------------------------------------------------------------

_names = st.from_regex(r"[a-z_][a-z0-9_]{0,6}", fullmatch=True).filter(lambda n: not reserved_name(n))
_steps = st.one_of(_names, st.integers(0, 99))
_spaces = st.sampled_from(["", " ", "  ", "\t"])
_filter_chains = st.lists(st.sampled_from(["json", "shquote"]), max_size=3)


@st.composite
def placeholders(draw: st.DrawFn) -> tuple[str, str, str, tuple[str | int, ...], tuple[str, ...]]:
    kind = draw(st.sampled_from(["var", "env", "secret", "secret_var"]))
    name = draw(_names) if kind in ("var", "secret_var") else draw(st.from_regex(r"[A-Z_][A-Z0-9_.\-]{0,8}", fullmatch=True))
    path: tuple[str | int, ...] = tuple(draw(st.lists(_steps, max_size=3))) if kind in ("var", "secret_var") else ()
    filters = tuple(draw(_filter_chains))
    prefix = {"var": "", "env": "runtime_env:", "secret": "secret:", "secret_var": "secret_var:"}[kind]
    body = prefix + ".".join(map(str, (name, *path)))
    body += "".join(draw(_spaces) + "|" + draw(_spaces) + f for f in filters)
    return "{{" + draw(_spaces) + body + draw(_spaces) + "}}", kind, name, path, filters


# No "$": "${{" is never a placeholder (ForeignTemplateTests covers it).
_plain = st.text(st.characters(blacklist_characters="{}\\$"), max_size=30)


class PropertyTests(unittest.TestCase):
    @settings(max_examples=200, deadline=None)
    @given(st.text())
    def test_text_without_double_brace_is_unchanged(self, text: str) -> None:
        if "{{" not in text:
            self.assertEqual(expand(text, FailingResolver()), text)

    @settings(max_examples=300, deadline=None)
    @given(st.text(alphabet=st.sampled_from(list("{}\\ .|:_a0$-\tjsonecrtvx_\n'\"")) , max_size=60))
    def test_random_text_only_raises_template_error(self, text: str) -> None:
        r = FakeResolver({"a": {"a": [1, "x"]}, "x": "a"}, {"a": "e"}, {"a": "s"})
        try:
            out = expand(text, r)
        except TemplateError as e:
            self.assertIn(e.placeholder, text)
        else:
            self.assertIsInstance(out, str)

    @settings(max_examples=200, deadline=None)
    @given(st.text())
    def test_shquote_round_trips_through_shlex(self, value: str) -> None:
        out = expand("{{v|shquote}}", FakeResolver({"v": value}))
        self.assertEqual(shlex.split(out), [value])

    @settings(max_examples=200, deadline=None)
    @given(_plain, placeholders(), _plain)
    def test_escaped_placeholder_comes_out_literally(self, before: str, ph: tuple[Any, ...], after: str) -> None:
        text = ph[0]
        self.assertEqual(expand(before + "\\" + text + after, FailingResolver()), before + text + after)

    @settings(max_examples=200, deadline=None)
    @given(_plain, placeholders(), _plain)
    def test_generated_placeholder_is_parsed_back(self, before: str, ph: tuple[Any, ...], after: str) -> None:
        text, kind, name, path, filters = ph
        self.assertEqual(
            find_placeholders(before + text + after),
            [Placeholder(text, kind, name, path, filters, len(before), len(before) + len(text))],
        )

    @settings(max_examples=200, deadline=None)
    @given(st.text(min_size=1), _filter_chains)
    def test_every_substituted_secret_contains_a_reported_value(self, secret: str, filters: list[str]) -> None:
        template = "{{secret:S" + "".join("|" + f for f in filters) + "}}"
        out, used = expand_with_secrets(template, FakeResolver(secrets={"S": secret}))
        self.assertIn(secret, used)
        self.assertTrue(any(value in out for value in used))


# -- Go, Helm, Jinja and CI text (PROTOCOL.md 14) ------------------------------

_keywords = st.sampled_from(sorted(RESERVED_NAMES))
_any_names = st.from_regex(r"[a-z_][a-z0-9_]{0,6}", fullmatch=True)  # keywords included
_ws = st.sampled_from(["", " ", "\t", "  "])
_go_args = st.sampled_from(["", " .x", " .Values.image", ' "s"', " $e", " $i, $e := .Items", " eq .a 1", " . | json"])
_comment_text = st.lists(st.sampled_from([*"ab {}\\$.\n-|:", "{{name}}", "{{ nope }}", "\\{{x}}", "}}"]), max_size=12).map("".join)


@st.composite
def go_fragments(draw: st.DrawFn) -> str:
    """One piece of Go / Helm / Jinja / CI template text, never a placeholder."""
    which = draw(st.integers(0, 6))
    trim_l = draw(st.sampled_from(["", "- "]))
    trim_r = draw(st.sampled_from(["", " -"]))
    if which == 0:  # a keyword action, with or without trim markers and arguments
        return "{{" + trim_l + draw(_ws) + draw(_keywords) + draw(_go_args) + draw(_ws) + trim_r + "}}"
    if which == 1:  # a keyword in the placeholder shape, with a path or filters
        kw = draw(_keywords)
        tail = draw(st.sampled_from(["", ".x", ".x.0", "|json", " | shquote", "|bogus"]))
        return "{{" + draw(_ws) + kw + tail + draw(_ws) + "}}"
    if which == 2:  # trim markers around anything, a defined or undefined name included
        inner = draw(st.one_of(_any_names, st.just(".Values.x"), st.just("secret:DB_PASS")))
        if draw(st.booleans()):
            return "{{-" + draw(st.sampled_from([" ", "\t", ""])) + inner + draw(_ws) + "}}"
        return "{{" + draw(_ws) + inner + draw(st.sampled_from([" ", "\t"])) + "-}}"  # Go wants the space
    if which == 3:  # a Go comment
        return "{{" + trim_l + "/*" + draw(_comment_text) + "*/" + trim_r + "}}"
    if which == 4:  # a CI expression
        return "${{" + draw(_ws) + ".".join(draw(st.lists(_any_names, min_size=1, max_size=3))) + draw(_ws) + "}}"
    if which == 5:  # a Go field or pipeline
        return "{{" + draw(_ws) + draw(st.sampled_from([".Names", "json .", ".metadata.name", '"\\n"', "$x", "printf \"%s\" .a"])) + draw(_ws) + "}}"
    return draw(st.sampled_from(["{% for x in xs %}", "{%- endfor -%}", "{# c #}", "{{ x | default('y') }}"]))


_go_plain = st.text(st.characters(blacklist_characters="{}\\"), max_size=8)


@st.composite
def go_texts(draw: st.DrawFn) -> str:
    parts = draw(st.lists(st.tuples(_go_plain, go_fragments()), max_size=6))
    return "".join(plain + fragment for plain, fragment in parts) + draw(_go_plain)


class ForeignTemplatePropertyTests(unittest.TestCase):
    @settings(max_examples=400, deadline=None)
    @given(go_texts())
    def test_go_and_ci_text_passes_through_unchanged(self, text: str) -> None:
        r = keyword_resolver()
        self.assertEqual(expand(text, r), text)
        self.assertEqual(r.calls, [])
        self.assertEqual(find_placeholders(text), [])

    @settings(max_examples=300, deadline=None)
    @given(go_texts(), go_texts(), _filter_chains)
    def test_a_real_placeholder_among_go_text_still_expands(self, before: str, after: str, filters: list[str]) -> None:
        template = "{{v" + "".join("|" + f for f in filters) + "}}"
        value = "a b'c"
        rendered = value
        for f in filters:
            rendered = json.dumps(rendered) if f == "json" else shlex.quote(rendered)
        out = expand(before + " " + template + " " + after, FakeResolver({"v": value}))
        self.assertEqual(out, before + " " + rendered + " " + after)

    @settings(max_examples=300, deadline=None)
    @given(go_texts(), _names, _spaces, go_texts())
    def test_an_undefined_name_among_go_text_still_fails(self, before: str, name: str, space: str, after: str) -> None:
        placeholder = "{{" + space + name + space + "}}"
        e = self.assertRaises(TemplateError, expand, before + " " + placeholder + " " + after, FakeResolver())
        self.assertEqual(e.placeholder, placeholder)
