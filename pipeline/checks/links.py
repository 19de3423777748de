"""Link checks: every href and src of email.html, web.html and email.txt, de-duplicated.

Syntax comes first (https, no empty or ``javascript:`` links, no private hosts,
no placeholder domains in the editor's content, no unrendered template tokens,
well-formed ``mailto:``); then internal anchors and the per-recipient
placeholders; then reachability (``reachability.py``) unless offline.

Tokenised links (the unsubscribe and view-in-browser placeholders, anything
under ``<base_url>/u/``, URLs carrying a token) are never requested: a link
checker that follows an unsubscribe link unsubscribes someone.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote, urlsplit

from email_validator import EmailNotValidError, validate_email
from lxml import html as lxml_html

from pipeline import placeholders
from pipeline.checks.reachability import LinkCache, LinkOptions, refuses_robots
from pipeline.checks.reachability import check_links as request_links
from pipeline.checks.report import LinkResult, Problem
from pipeline.config import Settings
from pipeline.content import Body
from pipeline.render import Edition

# Reserved for documentation (RFC 2606, RFC 6761): never a real destination, never requested.
PLACEHOLDER_DOMAINS = ("example.com", "example.org", "example.net", "example.edu", "example", "test", "invalid")
_TEMPLATE_TOKEN = re.compile(r"\{\{|\}\}|\{%|%\}|%7B%7B|%7D%7D", re.IGNORECASE)
_TOKEN_PARAMETERS = {"token", "sig", "signature", "unsubscribe", "auth", "key", "hash"}
_TEXT_URL = re.compile(r"(?:https?://|mailto:)[^\s<>\"\]\)]+|\{\{\s*\w+\s*\}\}")
_SAFE_SCHEMES = ("tel:", "sms:", "cid:", "data:")


@dataclass(frozen=True, kw_only=True)
class _Link:
    """A link as found: where it came from, and whether the editor wrote it."""

    url: str
    location: str
    by_editor: bool
    files: frozenset[str]


async def check_links(edition: Edition, settings: Settings, *, offline: bool) -> tuple[
        list[Problem], list[LinkResult]]:
    """Problems and per-URL results for every link of the edition."""
    links = _collect(edition)
    problems: list[Problem] = []
    results: dict[str, LinkResult] = {}
    to_request: list[_Link] = []
    for link in links:
        verdict = _classify(link, settings, offline)
        if isinstance(verdict, LinkResult):
            results[link.url] = verdict
        else:
            to_request.append(link)
        problems += _syntax(link, settings)
    problems += _anchors(edition) + _placeholders_present(edition)
    if to_request:
        options = LinkOptions.from_settings(settings.checks)
        cache = LinkCache(settings.paths.cache / "links.json") if options.cache_hours > 0 else None
        answered = await request_links([link.url for link in to_request], options, cache=cache)
        for link in to_request:
            results[link.url] = answered[link.url]
            problems += _reachability(link, answered[link.url], settings)
    return problems, [results[link.url] for link in links]


def _collect(edition: Edition) -> list[_Link]:
    """Every href and src, in order of first appearance, with its draft.md line when the editor wrote it."""
    editor_urls = _editor_urls(edition.body)
    draft_lines = edition.draft.lines
    sections = {link.href: link.section for link in edition.links}
    found: dict[str, set[str]] = {}
    for name, html in (("email.html", edition.email_html), ("web.html", edition.web_html)):
        document = lxml_html.document_fromstring(html.encode("utf-8"))
        for element in document.iter():
            for attribute in ("href", "src"):
                value = element.get(attribute) if isinstance(element.tag, str) else None
                if value is not None and (value in ("", "#") or not value.startswith("#")):
                    found.setdefault(value.strip(), set()).add(name)
    for match in _TEXT_URL.finditer(edition.email_txt):
        found.setdefault(match.group().rstrip(".,;:!?'’”"), set()).add("email.txt")
    links = []
    for url, files in found.items():
        line = next((n for n, text in enumerate(draft_lines, 1) if url and url in text), None)
        location = f"draft.md:{line}" if line and url in editor_urls else sections.get(url) or url
        links.append(_Link(url=url, location=location, by_editor=url in editor_urls, files=frozenset(files)))
    return links


def _editor_urls(body: Body) -> set[str]:
    urls: set[str] = set()
    tokens = [token for block in (*body.lede, *body.signoff) for token in block.tokens]
    tokens += [token for section in body.sections for block in section.blocks for token in block.tokens]
    tokens += list(body.footnotes)
    for token in tokens:
        for child in token.children or []:
            for attribute in ("href", "src"):
                value = child.attrGet(attribute)
                if value:
                    urls.add(str(value))
    return urls


def _skipped(link: _Link, why: str) -> LinkResult:
    return LinkResult(url=link.url, status=None, final_url=None, result="skipped", message=why)


def _classify(link: _Link, settings: Settings, offline: bool) -> LinkResult | None:
    """A result for links that are not requested; None for those that are."""
    url = link.url
    if placeholders.PATTERN.fullmatch(url):
        return _skipped(link, "filled per recipient at send time; never requested")
    scheme = urlsplit(url).scheme.lower()
    if scheme not in ("http", "https") or _TEMPLATE_TOKEN.search(url) or _is_private(url, settings):
        return _skipped(link, "not a web address")
    if _is_tokenised(url, settings):
        return _skipped(link, "tokenised link; never requested")
    if _placeholder_domain(url):
        return _skipped(link, "reserved example domain")
    if offline:
        return _skipped(link, "offline")
    return None


def _problem(severity: str, message: str, location: str) -> Problem:
    return Problem(check="links", severity=severity, message=message, location=location)  # type: ignore[arg-type]


def _syntax(link: _Link, settings: Settings) -> list[Problem]:
    url, where = link.url, link.location
    lowered = url.lower()
    if placeholders.PATTERN.fullmatch(url):
        return []
    if url in ("", "#"):
        return [_problem("error", f"empty link ({url or 'no address'})", where)]
    if _TEMPLATE_TOKEN.search(url):
        return [_problem("error", f"unrendered template token in link: {url}", where)]
    if lowered.startswith("javascript:"):
        return [_problem("error", f"javascript: link: {url}", where)]
    if lowered.startswith("mailto:"):
        return _mailto(url, where)
    if lowered.startswith(_SAFE_SCHEMES):
        return []
    scheme = urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        return [_problem("error", f"not an absolute web address: {url}", where)]
    problems = []
    if scheme == "http":
        problems.append(_problem("warning", f"plain http:// link (use https://): {url}", where))
    if _is_private(url, settings):
        problems.append(_problem("error", f"link to a local or private address: {url} "
                                          "(list the host in [checks] allow_hosts if intended)", where))
    if link.by_editor and _placeholder_domain(url):
        problems.append(_problem("error", f"placeholder domain in a link: {url}", where))
    return problems


def _mailto(url: str, where: str) -> list[Problem]:
    address = unquote(urlsplit(url).path)
    try:
        for part in address.split(","):
            validate_email(part.strip(), check_deliverability=False)
    except EmailNotValidError as exc:
        return [_problem("error", f"malformed mailto: link {url} ({exc})", where)]
    return []


def _host(url: str) -> str:
    return (urlsplit(url).hostname or "").lower().rstrip(".")


def _is_private(url: str, settings: Settings) -> bool:
    host = _host(url)
    if not host or host in {allowed.lower() for allowed in settings.checks.allow_hosts}:
        return False
    if host == "localhost" or host.endswith((".localhost", ".local", ".internal", ".lan")):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_private or address.is_loopback or address.is_link_local or address.is_unspecified


def _placeholder_domain(url: str) -> bool:
    host = _host(url)
    return any(host == domain or host.endswith("." + domain) for domain in PLACEHOLDER_DOMAINS)


def _is_tokenised(url: str, settings: Settings) -> bool:
    if url.startswith(f"{settings.publication.base_url}/u/"):
        return True
    return any(key.lower() in _TOKEN_PARAMETERS for key, _ in parse_qsl(urlsplit(url).query))


def _anchors(edition: Edition) -> list[Problem]:
    """Every #anchor (the table of contents, footnotes) points at an element that exists."""
    problems = []
    for name, html in (("email.html", edition.email_html), ("web.html", edition.web_html)):
        document = lxml_html.document_fromstring(html.encode("utf-8"))
        ids = {element.get("id") for element in document.iter() if isinstance(element.tag, str)}
        for anchor in document.iter("a"):
            href = anchor.get("href") or ""
            if href.startswith("#") and len(href) > 1 and unquote(href[1:]) not in ids:
                problems.append(_problem("error", f"link to #{href[1:]} has no target in {name}", name))
    return problems


def _placeholders_present(edition: Edition) -> list[Problem]:
    problems = []
    for name in (placeholders.UNSUBSCRIBE_URL, placeholders.VIEW_URL):
        token = placeholders.placeholder(name)
        if token not in edition.email_html:
            problems.append(_problem("error", f"the {token} placeholder is missing from email.html", "email.html"))
    return problems


def _reachability(link: _Link, result: LinkResult, settings: Settings) -> list[Problem]:
    where = link.location
    if result.result == "redirected":
        return [_problem("warning", f"permanently redirected: link to {result.final_url} instead of {link.url}",
                         where)]
    if result.result == "unreachable":
        return [_problem(settings.checks.unreachable, f"unreachable: {link.url} ({result.message})", where)]
    if result.result == "broken":
        detail = f"{result.status}" if result.status else result.message
        if result.status in (403, 429, 999) and refuses_robots(result.final_url or link.url):
            return [_problem("warning", f"could not verify {link.url} ({detail}): this host refuses automated "
                                        "checks", where)]
        message = f"broken link ({detail}{', ' + result.message if result.status and result.message else ''})"
        return [_problem("error", f"{message}: {link.url}", where)]
    return []
