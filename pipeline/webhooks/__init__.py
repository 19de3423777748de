"""Provider webhooks: what each mail provider reports after it accepted a message.

    signatures.py   how each provider signs (or authenticates) its webhook requests: verify, and sign (the emulator)
    events.py       ``ProviderEvent``, and a parser per provider from its JSON to those records

``pipeline/web/webhooks.py`` takes the requests, ``pipeline/store/events.py`` records the events and applies
them (delivery rows, suppressions, soft-bounce counts) in one transaction per request.
"""
