"""Keys and SAS signatures never reach a log line, whoever logs them and in whichever format."""

from __future__ import annotations

import io
import json
import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.observability import JsonFormatter, TextFormatter
from shared.urls import SecretMaskingFilter, mask_secrets

SECRET = st.text(
    alphabet=st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_~.%+/"),
    min_size=12,
    max_size=64,
)


@given(secret=SECRET, param=st.sampled_from(["code", "sig", "sv", "se", "sp", "CODE", "Sig"]))
def test_secret_query_values_are_masked_in_request_lines(secret, param):
    plain = secret.replace("%", "") or "x"
    for line, secret_part, masked_part in (
        (f'"GET /api/x?{param}={secret} HTTP/1.1" 200 -', f"{param}={secret}", f"{param}=***"),
        (
            f'"POST /runtime/webhooks/eventgrid?functionName=f&{param}={secret}&x=1 HTTP/1.1" 200 -',
            f"{param}={secret}",
            f"{param}=***",
        ),
        (
            f"calling https://prod-1.logic.azure.com/workflows/w?api-version=2016-06-01&{param}={secret}",
            f"{param}={secret}",
            f"{param}=***",
        ),
        (f"nested: u=https%3A%2F%2Fh%2Fp%3F{param}%3D{plain}", f"{param}%3D{plain}", f"{param}%3D***"),
    ):
        # exactly the value is replaced, nothing else changes
        assert mask_secrets(line) == line.replace(secret_part, masked_part)


def test_other_text_is_left_alone():
    for text in ("error code=ResourceNotFound", "encode=1", "x?barcode=12", "status=202 dedupe_key=abc"):
        assert mask_secrets(text) == text


@pytest.mark.parametrize("formatter", [JsonFormatter(), TextFormatter()])
def test_the_handler_filter_masks_messages_and_tracebacks_in_both_formats(formatter):
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.addFilter(SecretMaskingFilter())
    logger = logging.getLogger("tests.security.masking")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("GET %s", "/api/a?code=key-value-1234")
        try:
            raise RuntimeError("POST https://x.logic.azure.com/cb?sv=1.0&sig=signature-5678 failed")
        except RuntimeError:
            logger.exception("callback failed")
    finally:
        logger.removeHandler(handler)
    out = stream.getvalue()
    assert "key-value-1234" not in out and "signature-5678" not in out
    assert "code=***" in out and "sig=***" in out
    if isinstance(formatter, JsonFormatter):
        assert all(json.loads(line) for line in out.splitlines() if line.startswith("{"))
