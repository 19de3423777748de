"""Regenerate ``specs/*.json`` from the providers' published OpenAPI documents.

The emulator validates requests against the request schemas the providers publish.
This script copies those schema objects verbatim, and copies every schema they refer
to into ``$defs`` (rewriting ``#/components/schemas/X`` to ``#/$defs/X``) so that
each file stands alone as a JSON Schema 2020-12 document. Nothing is added to or
removed from the copied objects. Run it against the folder described in
``specs/README.md``::

    python -m pipeline.emulator.extract_specs /path/to/provider-specs
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import yaml

SPECS = Path(__file__).with_name("specs")
DIALECT = "https://json-schema.org/draft/2020-12/schema"
REF_PREFIX = "#/components/schemas/"


def _rewrite(node: Any, spec: dict[str, Any], defs: dict[str, Any]) -> Any:
    """A copy of ``node`` with component references pointing into ``defs``, which it fills."""
    if isinstance(node, list):
        return [_rewrite(item, spec, defs) for item in node]
    if not isinstance(node, dict):
        return node
    copy = {}
    for key, value in node.items():
        if key == "$ref" and isinstance(value, str) and value.startswith(REF_PREFIX):
            name = value.removeprefix(REF_PREFIX)
            if name not in defs:
                defs[name] = {}  # reserve the name first: schemas may refer to themselves
                defs[name] = _rewrite(spec["components"]["schemas"][name], spec, defs)
            copy[key] = f"#/$defs/{name}"
        else:
            copy[key] = _rewrite(value, spec, defs)
    return copy


def standalone(spec: dict[str, Any], schema: dict[str, Any], source: str) -> dict[str, Any]:
    """``schema`` (taken from ``spec``) as a self-contained JSON Schema document."""
    if set(schema) == {"$ref"}:  # a request body that only names a component: take the component itself
        schema = spec["components"]["schemas"][schema["$ref"].removeprefix(REF_PREFIX)]
    defs: dict[str, Any] = {}
    body = _rewrite(schema, spec, defs)
    document = {"$schema": DIALECT, "$comment": f"Copied verbatim from {source}; see README.md.", **body}
    if defs:
        document["$defs"] = defs
    return document


def extract(source: Path) -> None:
    sendgrid = json.loads((source / "sendgrid" / "tsg_mail_v3.json").read_text(encoding="utf-8"))
    schema = sendgrid["components"]["requestBodies"]["PostMailSend"]["content"]["application/json"]["schema"]
    _write("sendgrid-mail-send.json", standalone(
        sendgrid, schema, "sendgrid/tsg_mail_v3.json components.requestBodies.PostMailSend (application/json)"))

    resend = json.loads((source / "resend" / "resend.json").read_text(encoding="utf-8"))
    schema = resend["paths"]["/emails/batch"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    _write("resend-emails-batch.json", standalone(
        resend, schema, "resend/resend.json paths./emails/batch.post.requestBody (application/json)"))

    mailgun = yaml.safe_load((source / "mailgun" / "openapi.yaml").read_text(encoding="utf-8"))
    operation = mailgun["paths"]["/v3/{domain_name}/messages"]["post"]
    schema = operation["requestBody"]["content"]["multipart/form-data"]["schema"]
    _write("mailgun-messages.json", standalone(
        mailgun, schema,
        "mailgun/openapi.yaml paths./v3/{domain_name}/messages.post.requestBody (multipart/form-data)"))

    for provider in ("sendgrid", "resend", "mailgun"):
        shutil.copyfile(source / provider / "LICENSE", SPECS / f"LICENSE.{provider}")


def _write(name: str, document: dict[str, Any]) -> None:
    (SPECS / name).write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m pipeline.emulator.extract_specs PROVIDER_SPECS_FOLDER")
    extract(Path(sys.argv[1]))
