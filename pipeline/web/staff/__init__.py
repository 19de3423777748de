"""The staff console under /staff/: who got an edition, what failed, what happens next.

    auth.py       sign-in, sessions, roles, CSRF; every other route is wrapped by ``auth.page``
    sends.py      /staff/sends, /staff/sends/<id> (reconciliation, timeline, recipients, actions)
    people.py     /staff/subscribers, /staff/subscribers/<id>
    calendar.py   /staff/schedule
    admin.py      /staff/audit, /staff/users
    forms.py      what their lists and forms share: fields read or refused by name, keyset links, JSON twins

``routes(site)`` in ``console.py`` gathers them for the app.
"""
