"""``newsletter serve``: the publication's web side, one Starlette app on uvicorn.

    /                      the publication's home: subscribe, the archive
    /u/<token>             unsubscribe: a page with one button (GET changes nothing), RFC 8058 one-click POST
    /p/<token>             a reader's preferences, their data (JSON), erasure
    /subscribe             signup with double opt-in; /confirm/<token> confirms it
    /archive/              the sent editions; /archive/<edition>/ one of them; /archive/feed.xml (Atom)
    /webhooks/<provider>   delivery, bounce, complaint and unsubscribe events from the mail provider

``app.create_app`` builds the app; ``site.py`` holds what every route shares (settings, store, pages), ``guard.py`` the
security headers, request limits and error pages; a module per group of routes.
Every address the pages link to is built by ``pipeline.urls``, as the emails' are.
"""
