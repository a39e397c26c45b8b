"""The OpenAPI document: every HTTP function in it, valid OpenAPI 3.0, usable as a custom connector."""

import json

import jsonschema_rs
import pytest
from schemathesis.specs.openapi.definitions import OPENAPI_30

from shared.approvals.models import DecisionIn, parse_body
from shared.approvals.openapi import openapi_document
from shared.errors import BadInputError


def _http_functions():
    import function_app
    from devhost.index import list_functions

    out = {}
    for fn in list_functions(function_app.app):
        trigger = fn.get_trigger().get_dict_repr()
        if trigger["type"] == "httpTrigger":
            out[fn.get_function_name()] = trigger
    return out


def test_every_http_function_of_the_app_is_an_operation_of_the_document():
    doc = openapi_document("func-valueflow.azurewebsites.net")
    operations = {
        op["operationId"]: (method.upper(), path) for path, item in doc["paths"].items() for method, op in item.items()
    }
    for name, trigger in _http_functions().items():
        assert name in operations, f"HTTP function {name} is missing from the OpenAPI document"
        method, path = operations[name]
        assert path == "/" + trigger["route"] and method in [
            str(getattr(m, "value", m)).upper() for m in trigger["methods"]
        ]


def test_the_document_validates_against_the_openapi_3_0_schema():
    doc = openapi_document("func-valueflow.azurewebsites.net")
    jsonschema_rs.Draft4Validator(OPENAPI_30).validate(json.loads(json.dumps(doc)))
    assert doc["servers"] == [{"url": "https://func-valueflow.azurewebsites.net/api"}]


def test_the_document_has_what_a_logic_apps_custom_connector_needs():
    doc = openapi_document()
    assert doc["components"]["securitySchemes"]["functionKey"] == {
        "type": "apiKey",
        "in": "header",
        "name": "x-functions-key",
    }
    for item in doc["paths"].values():
        for op in item.values():
            assert op["operationId"] and op["summary"]
    callback = doc["components"]["schemas"]["ApprovalCreateIn"]["properties"]["callbackUrl"]
    assert callback["x-ms-notification-url"] is True and callback["x-ms-summary"]


@pytest.mark.parametrize(
    ("raw", "ctype", "status", "field"),
    [
        (b"{oops", "application/json", 400, None),
        (b"[1]", "application/json", 400, None),
        (b'{"decision": "approve", "approver": 42}', "application/json", 400, "approver"),
        (b'{"decision": "delete", "approver": "a"}', "application/json", 400, "decision"),
        (b'{"approver": "a"}', "application/json", 400, "decision"),
        (b"x" * (256 * 1024 + 1), "application/json", 413, None),
        (b'{"decision": "approve"}', "text/plain", 415, None),
    ],
)
def test_bad_bodies_are_refused_with_the_field_that_is_wrong(raw, ctype, status, field):
    with pytest.raises(BadInputError) as err:
        parse_body(raw, ctype, DecisionIn)
    assert err.value.status == status
    if field:
        assert any(e["field"] == field for e in err.value.errors)


def test_the_swagger_2_export_validates_and_keeps_every_operation_for_the_connector_wizard():
    from schemathesis.specs.openapi.definitions import SWAGGER_20

    from shared.approvals.openapi import swagger2_document

    doc = swagger2_document("func-valueflow.azurewebsites.net")
    jsonschema_rs.Draft4Validator(SWAGGER_20).validate(json.loads(json.dumps(doc)))
    assert (doc["host"], doc["basePath"], doc["schemes"]) == ("func-valueflow.azurewebsites.net", "/api", ["https"])
    v3 = openapi_document("func-valueflow.azurewebsites.net")
    ids = lambda d: {op["operationId"] for item in d["paths"].values() for op in item.values()}  # noqa: E731
    assert ids(doc) == ids(v3)
    assert "#/components/" not in json.dumps(doc)
    body = next(p for p in doc["paths"]["/approvals"]["post"]["parameters"] if p["in"] == "body")
    assert body["schema"] == {"$ref": "#/definitions/ApprovalCreateIn"}
    assert doc["definitions"]["ApprovalCreateIn"]["properties"]["callbackUrl"]["x-ms-notification-url"] is True
