"""Mailgun's messages API: the exact requests, and what each answer means."""

from __future__ import annotations

import base64
import json
import re

from pipeline.mail import Batch, Recipient
from pipeline.messages import personalise
from pipeline.providers.http import RetryPolicy
from pipeline.providers.mailgun import MailgunProvider

from .conftest import (
    KEY,
    Server,
    assert_key_only_in,
    form_fields,
    make_batch,
    make_settings,
    ok_json,
    run,
    send_batch,
)

# ---------------------------------------------------------------- Mailgun


def test_mailgun_request(policy: RetryPolicy) -> None:
    settings = make_settings("mailgun", domain="mg.example.org")
    batch = make_batch(settings, 4)
    server = Server(ok_json({"id": "<20240301.1@mg.example.org>", "message": "Queued. Thank you."}))
    outcomes = run(send_batch(MailgunProvider(settings, server.client(), policy=policy), batch))
    [request] = server.requests
    assert str(request.url) == "https://api.mailgun.net/v3/mg.example.org/messages"
    assert request.headers["Authorization"] == "Basic " + base64.b64encode(f"api:{KEY}".encode()).decode()
    assert_key_only_in(request, "Authorization")
    assert request.headers["Content-Type"].startswith("multipart/form-data; boundary=")
    fields = form_fields(request)
    values = dict(fields)  # the last of a repeated name
    to = [value for name, value in fields if name == "to"]
    assert len(to) == 4 and all(p.email in t for t, p in zip(to, batch.recipients, strict=True))
    assert [name for name, _ in fields].count("html") == 1 and [name for name, _ in fields].count("text") == 1
    assert values["from"] == "The Test Report <report@example.org>" and values["subject"] == batch.mail.subject
    assert values["h:Reply-To"] == "editor@example.org"
    assert values["h:List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert values["h:List-Id"] == dict(batch.mail.list_headers)["List-Id"]
    assert values["v:send"] == "42" and values["v:delivery"] == "%recipient.delivery%"
    variables = json.loads(values["recipient-variables"])
    assert sorted(variables) == sorted(p.email for p in batch.recipients)
    for person in batch.recipients:
        mine = variables[person.email]

        def fill(text: str, mine: dict[str, str] = mine) -> str:
            return re.sub(r"%recipient\.(\w+)%", lambda m: mine[m[1]], text)

        assert (fill(values["html"]), fill(values["text"])) == personalise(batch.mail, person)
        assert fill(values["h:List-Unsubscribe"]) == person.headers["List-Unsubscribe"]
        assert person.values["unsubscribe_url"] in fill(values["h:List-Unsubscribe"])
        assert fill(values["v:delivery"]) == str(person.delivery_id)
    assert [(o.status, o.provider_message_id) for o in outcomes] == [("sent", "20240301.1@mg.example.org")] * 4


def test_mailgun_eu_region(policy: RetryPolicy) -> None:
    settings = make_settings("mailgun", domain="mg.example.org", region="eu")
    server = Server(ok_json({"id": "<x@mg>", "message": "Queued."}))
    run(send_batch(MailgunProvider(settings, server.client(), policy=policy), make_batch(settings, 1)))
    assert str(server.requests[0].url) == "https://api.eu.mailgun.net/v3/mg.example.org/messages"


def test_mailgun_sends_the_same_address_twice_in_separate_requests(policy: RetryPolicy) -> None:
    settings = make_settings("mailgun", domain="mg.example.org")
    batch = make_batch(settings, 3)
    twin = Recipient(delivery_id=999, email=batch.recipients[0].email.upper(), name="Twin",
                     values=batch.recipients[0].values, headers=batch.recipients[0].headers)
    batch = Batch(id=batch.id, mail=batch.mail, recipients=(*batch.recipients, twin))
    server = Server(ok_json({"id": "<x@mg>", "message": "Queued."}))
    outcomes = run(send_batch(MailgunProvider(settings, server.client(), policy=policy), batch))
    assert [len([v for n, v in form_fields(r) if n == "to"]) for r in server.requests] == [3, 1]
    assert sorted(o.delivery_id for o in outcomes) == [100, 101, 102, 999]
