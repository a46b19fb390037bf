"""Template parameters (spinrt.parameters): declarations and the values given for them."""

from __future__ import annotations

from twisted.trial import unittest

from spinrt.parameters import check_parameter_values, described, parse_parameters

REGION = {"name": "region", "kind": "static", "options": ["eu", "us"], "default": "eu", "label": "Region"}
HOST = {"name": "host", "kind": "input"}
POD = {"name": "pod", "kind": "code_python", "code": "['a', 'b']"}


class DeclarationTests(unittest.TestCase):
    def test_good_declarations(self) -> None:
        parsed = parse_parameters("parameters", [REGION, HOST, POD, {"name": "x", "kind": "input", "label": None}])
        self.assertEqual(parsed, [REGION, HOST, POD, {"name": "x", "kind": "input"}])
        self.assertEqual(parse_parameters("parameters", []), [])

    def test_every_bad_declaration_names_its_field(self) -> None:
        cases = [
            ({}, "'parameters' must be a list"),
            ("x", "'parameters' must be a list"),
            ([5], "'parameters[0]' must be an object"),
            ([{"kind": "input"}], "'parameters[0].name' must be an identifier"),
            ([{"name": "a b", "kind": "input"}], "'parameters[0].name' must be an identifier"),
            ([{"name": "1a", "kind": "input"}], "'parameters[0].name' must be an identifier"),
            ([{"name": 3, "kind": "input"}], "'parameters[0].name' must be an identifier"),
            ([{"name": "end", "kind": "input"}], "Go template keywords"),
            ([{"name": "a"}], "'parameters[0].kind' must be one of input, static, code_python"),
            ([{"name": "a", "kind": "dropdown"}], "'parameters[0].kind' must be one of"),
            ([{"name": "a", "kind": "input", "label": 3}], "'parameters[0].label' must be a string"),
            ([{"name": "a", "kind": "input", "default": 3}], "'parameters[0].default' must be a string"),
            ([{"name": "a", "kind": "input", "colour": "red"}], "unknown fields: colour"),
            ([{"name": "a", "kind": "static"}], "'parameters[0].options' is required"),
            ([{"name": "a", "kind": "static", "options": []}], "at least one option"),
            ([{"name": "a", "kind": "static", "options": "ab"}], "'parameters[0].options' must be a list of strings"),
            ([{"name": "a", "kind": "static", "options": ["x", 1]}], "must be a list of strings"),
            ([{"name": "a", "kind": "static", "options": ["x"], "default": "y"}], "'parameters[0].default' must be one of its options"),
            ([{"name": "a", "kind": "static", "options": ["x"] * 10_001}], "more than 10000 options"),
            ([{"name": "a", "kind": "input", "options": ["x"]}], "only for static parameters"),
            ([{"name": "a", "kind": "code_python", "options": ["x"], "code": "[]"}], "come from its code"),
            ([{"name": "a", "kind": "code_python"}], "'parameters[0].code' must be Python code"),
            ([{"name": "a", "kind": "code_python", "code": "  "}], "'parameters[0].code' must be Python code"),
            ([{"name": "a", "kind": "code_python", "code": 5}], "'parameters[0].code' must be Python code"),
            ([{"name": "a", "kind": "input", "code": "[]"}], "only for code_python"),
            ([HOST, {"name": "b", "kind": "input"}, HOST], "'parameters[2].name' 'host' is declared twice"),
            ([HOST] * 201, "more than 200 parameters"),
        ]
        for value, message in cases:
            with self.assertRaises(ValueError, msg=repr(value)[:80]) as caught:
                parse_parameters("parameters", value)
            self.assertIn(message, str(caught.exception))

    def test_described(self) -> None:
        self.assertEqual(described(REGION), {"name": "region", "kind": "static", "label": "Region",
                                              "default": "eu", "options": ["eu", "us"]})
        self.assertEqual(described(HOST), {"name": "host", "kind": "input", "label": "host",
                                           "default": None, "options": None})
        self.assertEqual(described(POD, ["p1"])["options"], ["p1"])
        self.assertIsNone(described(POD)["options"])


class ValueTests(unittest.TestCase):
    def test_good_values(self) -> None:
        check_parameter_values([REGION, HOST, POD], {"region": "us", "host": "db-1", "pod": "anything"})
        check_parameter_values([REGION, HOST], {})  # no value: the default or a template error later
        check_parameter_values([REGION], {"other": 5})  # not a parameter: any session variable
        check_parameter_values([HOST], {"host": ""})
        # With computed options (notebook.parameters' answer), a code_python value must be one.
        check_parameter_values([described(POD, ["a", "b"])], {"pod": "b"})
        # A code_python parameter whose code failed has options null: any text.
        check_parameter_values([{**described(POD), "error": "boom"}], {"pod": "x"})

    def test_bad_values_name_the_parameter(self) -> None:
        cases = [
            ([REGION], {"region": "mars"}, "'variables.region' must be one of 'eu', 'us' (parameter 'region' is static), not 'mars'"),
            ([REGION], {"region": "EU"}, "not 'EU'"),
            ([REGION], {"region": 1}, "'variables.region' must be a string (parameter 'region' is static), not int"),
            ([HOST], {"host": 5}, "'variables.host' must be a string (parameter 'host' is input), not int"),
            ([HOST], {"host": None}, "not NoneType"),
            ([HOST], {"host": ["a"]}, "not list"),
            ([HOST], {"host": {"a": 1}}, "not dict"),
            ([HOST], {"host": True}, "not bool"),
            ([POD], {"pod": 1.5}, "'variables.pod' must be a string (parameter 'pod' is code_python)"),
            ([described(POD, ["a", "b"])], {"pod": "c"}, "'variables.pod' must be one of 'a', 'b'"),
            ([described(REGION)], {"region": "x" * 100}, "\u2026"),
            ([{"name": "n", "kind": "static", "options": [str(i) for i in range(20)]}], {"n": "x"}, "and 10 more"),
        ]
        for parameters, values, message in cases:
            with self.assertRaises(ValueError, msg=repr(values)) as caught:
                check_parameter_values(parameters, values)
            self.assertIn(message, str(caught.exception))
