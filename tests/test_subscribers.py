"""Subscribers: import, list, export, unsubscribe and audience, on a real SQLite file."""

from __future__ import annotations

import argparse
import csv
import io
import json
import shutil
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, insert, select

from pipeline.cli.subscribers import add_commands as add_subscriber_commands
from pipeline.config import Settings
from pipeline.errors import NewsletterError, SubscriberError
from pipeline.store import Store, utcnow
from pipeline.store.tables import subscribers, suppressions
from pipeline.subscribers import (
    ImportReport,
    Subscriber,
    count_audience,
    export_subscribers,
    import_subscribers,
    list_subscribers,
    unsubscribe,
)

from .conftest import ROOT

SAMPLE = ROOT / "subscribers" / "subscribers.csv"
VALID_STATUSES = "(valid: active, unsubscribed, bounced, complained)"

# Every kind of bad line, in a file that starts with a BOM and has Windows line endings;
# the last line has no line ending at all.
BAD_LINES = [
    "\ufeffemail,name,tags,status,city",  # 1 header
    "ada@example.org,Ada Lovelace,policy;Energy,active,London",  # 2 ok
    "not-an-address,Nobody,,active,",  # 3 no @
    "ADA@Example.org,Ada Again,,,",  # 4 same address, other case
    "",  # 5 empty
    "grace@example.org,Grace Hopper,policy,active,New York,extra",  # 6 extra comma
    "alan@example.org,Alan Turing,cyber,paused,",  # 7 unknown status
    f"katherine@example.org,{'K' * 201},,,",  # 8 name too long
    "li@example.org,Li Wei,policy;bad tag,,",  # 9 bad tag
    "ada lovelace@example.org,Ada,,,",  # 10 space in the address
    "bob@,Bob,,,",  # 11 nothing after the @
    '"  Mary@Example.ORG ",Mary Somerville,Energy | policy,,Edinburgh',  # 12 ok: trimmed, domain lower-cased
    'grace@example.org,Grace Hopper,policy|cyber,,"New York, NY"',  # 13 ok: line 6 was rejected
    "alan@example.org,Alan Turing,cyber,unsubscribed,",  # 14 ok
    ",Nameless,policy,active,",  # 15 no address
    '"katherine@example.org","Katherine ""Kay"" Johnson",,ACTIVE,',  # 16 ok
]
BAD_REASONS = {
    3: "An email address must have an @-sign.",
    4: "duplicate of line 2",
    5: "empty line",
    6: "6 fields, the header has 5",
    7: f"unknown status 'paused' {VALID_STATUSES}",
    8: "the name is 201 characters long, the most is 200",
    9: "invalid tag 'bad tag': a tag has only letters, digits, '_' and '-'",
    10: "The email address contains invalid characters before the @-sign: SPACE.",
    11: "There must be something after the @-sign.",
    15: "no email address",
}


@pytest.fixture
def store(tmp_path: Path):
    store = Store(f"sqlite:///{tmp_path / 'subscribers.db'}")
    store.migrate()
    yield store
    store.dispose()


def write_csv(path: Path, lines: list[str], ending: str = "\n") -> Path:
    path.write_bytes(ending.join(lines).encode("utf-8"))
    return path


def rows(store: Store, table=subscribers) -> int:
    with store.begin() as connection:
        return connection.scalar(select(func.count()).select_from(table)) or 0


def by_email(store: Store) -> dict[str, Subscriber]:
    return {subscriber.email: subscriber for subscriber in list_subscribers(store)}


def counts(report: ImportReport) -> tuple[int, int, int, int, int]:
    return report.added, report.updated, report.unchanged, report.kept_unsubscribed, len(report.rejected)


# Import ------------------------------------------------------------------------------------------------------


def test_bad_lines_are_rejected_with_their_line_and_reason(store: Store, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "bad.csv", BAD_LINES, ending="\r\n")
    report = import_subscribers(store, path)
    assert counts(report) == (5, 0, 0, 0, 10)
    assert report.total_lines == 15 and not report.ok
    assert {rejection.line: rejection.reason for rejection in report.rejected} == BAD_REASONS
    assert [rejection.line for rejection in report.rejected] == sorted(BAD_REASONS)
    assert report.rejected[0].text == "not-an-address,Nobody,,active,"
    stored = by_email(store)
    assert sorted(stored) == ["Mary@example.org", "ada@example.org", "alan@example.org", "grace@example.org",
                              "katherine@example.org"]
    assert stored["ada@example.org"].tags == ("energy", "policy")
    assert stored["ada@example.org"].attributes == {"city": "London"}
    assert stored["Mary@example.org"].tags == ("energy", "policy")
    assert stored["grace@example.org"].attributes == {"city": "New York, NY"}
    assert stored["alan@example.org"].status == "unsubscribed"
    assert stored["katherine@example.org"].name == 'Katherine "Kay" Johnson'
    assert stored["katherine@example.org"].status == "active"
    assert rows(store) == 5


def test_reimport_changes_nothing_and_updates_what_changed(store: Store, tmp_path: Path) -> None:
    assert counts(import_subscribers(store, SAMPLE)) == (7, 0, 0, 0, 0)
    assert counts(import_subscribers(store, SAMPLE)) == (0, 0, 7, 0, 0)
    lines = SAMPLE.read_text(encoding="utf-8").splitlines()
    lines[1] = "ada.lovelace@example.org,Ada King,policy,active"
    report = import_subscribers(store, write_csv(tmp_path / "changed.csv", lines))
    assert counts(report) == (0, 1, 6, 0, 0)
    ada = by_email(store)["ada.lovelace@example.org"]
    assert (ada.name, ada.tags) == ("Ada King", ("policy",))


def test_unsubscribed_people_are_not_resubscribed_by_an_import(store: Store) -> None:
    import_subscribers(store, SAMPLE)
    assert unsubscribe(store, "Grace.Hopper@Example.org", source="test") is True
    report = import_subscribers(store, SAMPLE)
    assert counts(report) == (0, 0, 6, 1, 0)
    assert by_email(store)["grace.hopper@example.org"].status == "unsubscribed"
    assert count_audience(store, None) == 5

    report = import_subscribers(store, SAMPLE, resubscribe=True)
    assert counts(report) == (0, 1, 6, 0, 0)
    assert by_email(store)["grace.hopper@example.org"].status == "active"
    assert rows(store, suppressions) == 0
    assert count_audience(store, None) == 6


def test_a_suppressed_address_is_not_added_as_active(store: Store, tmp_path: Path) -> None:
    assert unsubscribe(store, "new.reader@example.org", reason="complained") is False
    path = write_csv(tmp_path / "new.csv", ["email,name", "new.reader@example.org,New Reader"])
    assert counts(import_subscribers(store, path)) == (0, 0, 0, 1, 0)
    assert by_email(store)["new.reader@example.org"].status == "complained"
    assert count_audience(store, None) == 0
    assert counts(import_subscribers(store, path, resubscribe=True)) == (0, 1, 0, 0, 0)
    assert count_audience(store, None) == 1 and rows(store, suppressions) == 0


def test_the_file_can_unsubscribe_an_active_subscriber(store: Store, tmp_path: Path) -> None:
    import_subscribers(store, SAMPLE)
    path = write_csv(tmp_path / "leave.csv", ["email,status", "alan.turing@example.org,unsubscribed"])
    assert counts(import_subscribers(store, path)) == (0, 1, 0, 0, 0)
    alan = by_email(store)["alan.turing@example.org"]
    assert (alan.status, alan.name, alan.tags) == ("unsubscribed", "Alan Turing", ("cyber",))  # columns absent: kept


def test_dry_run_writes_nothing_but_counts_the_same(store: Store, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "bad.csv", BAD_LINES, ending="\r\n")
    dry = import_subscribers(store, path, dry_run=True)
    assert rows(store) == 0 and dry.dry_run
    real = import_subscribers(store, path)
    assert counts(dry) == counts(real) and dry.rejected == real.rejected
    unsubscribe(store, "ada@example.org")
    before = [subscriber.to_dict() for subscriber in list_subscribers(store)]
    report = import_subscribers(store, SAMPLE, dry_run=True)
    assert counts(report) == (7, 0, 0, 0, 0)
    assert [subscriber.to_dict() for subscriber in list_subscribers(store)] == before
    assert rows(store, suppressions) == 1


def test_extra_columns_become_attributes(store: Store, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "extra.csv", ["email,name,City,plan", "ada@example.org,Ada,London,",
                                              "grace@example.org,Grace,,pro"])
    import_subscribers(store, path)
    stored = by_email(store)
    assert stored["ada@example.org"].attributes == {"City": "London"}  # an empty value is no attribute
    assert stored["grace@example.org"].attributes == {"plan": "pro"}
    merge = write_csv(tmp_path / "merge.csv", ["email,plan", "ada@example.org,free", "grace@example.org,"])
    assert counts(import_subscribers(store, merge)) == (0, 2, 0, 0, 0)
    stored = by_email(store)
    assert stored["ada@example.org"].attributes == {"City": "London", "plan": "free"}
    assert stored["grace@example.org"].attributes == {}
    assert stored["ada@example.org"].name == "Ada"


def test_export_then_import_is_unchanged(store: Store, tmp_path: Path) -> None:
    import_subscribers(store, write_csv(tmp_path / "bad.csv", BAD_LINES, ending="\r\n"))
    import_subscribers(store, SAMPLE)
    unsubscribe(store, "maria.sklodowska@example.org", reason="bounced")
    first = io.StringIO()
    assert export_subscribers(store, first) == 12
    header, *lines = list(csv.reader(io.StringIO(first.getvalue())))
    assert header == ["email", "name", "tags", "status", "city"]
    assert ["grace@example.org", "Grace Hopper", "cyber;policy", "active", "New York, NY"] in lines
    exported = tmp_path / "exported.csv"
    exported.write_text(first.getvalue(), encoding="utf-8")
    assert counts(import_subscribers(store, exported)) == (0, 0, 12, 0, 0)
    again = io.StringIO()
    export_subscribers(store, again)
    assert again.getvalue() == first.getvalue()


def test_export_filters(store: Store) -> None:
    import_subscribers(store, SAMPLE)
    out = io.StringIO()
    assert export_subscribers(store, out, tag="cyber", status="active") == 2
    assert out.getvalue().splitlines()[1:] == ["alan.turing@example.org,Alan Turing,cyber,active",
                                               "katherine.johnson@example.org,Katherine Johnson,cyber;policy,active"]


@pytest.mark.parametrize(("name", "found"), [
    ("Ada\x00", "U+0000"),
    ("A\x00da", "U+0000"),
    ("Ada\x1f", "U+001F"),
    ("\x1cAda", "U+001C"),
    ("Ada\x85", "U+0085"),
    ("Ada\u2028", "U+2028"),
    ("Ada\x7f", "U+007F"),
    ("Ada\tLovelace", "U+0009"),
    ('"Ada\r\nLovelace"', "U+000D"),
])
def test_a_control_character_in_a_name_rejects_the_line(store: Store, tmp_path: Path, name: str,
                                                        found: str) -> None:
    path = write_csv(tmp_path / "control.csv", ["email,name", "grace@example.org,Grace", f"ada@example.org,{name}"])
    report = import_subscribers(store, path)
    assert counts(report) == (1, 0, 0, 0, 1)
    assert report.rejected[0].line == 3
    assert report.rejected[0].reason == (f"the name has a line break or a control character ({found}; "
                                         "is a quote left open?)")


def test_spaces_and_tabs_around_a_name_are_trimmed(store: Store, tmp_path: Path) -> None:
    import_subscribers(store, write_csv(tmp_path / "padded.csv", ["email,name", "ada@example.org,\t Ada Lovelace \t"]))
    assert by_email(store)["ada@example.org"].name == "Ada Lovelace"


def test_cli_import_reports_a_control_character_with_file_and_line(run, project: Path) -> None:
    path = write_csv(project / "nul.csv", ["email,name", "ada@example.org,Ada\x00Lovelace"])
    code, out, err = run("subscribers", "import", str(path))
    assert code == 1
    assert err == f"{path}:2: the name has a line break or a control character (U+0000; is a quote left open?)\n"


def test_an_internationalised_address_is_imported(store: Store, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "idn.csv", ["email,name", "eve@bücher.de,Eve", "Zoë@Exämple.org,Zoë"])
    assert counts(import_subscribers(store, path)) == (2, 0, 0, 0, 0)
    assert set(by_email(store)) == {"eve@bücher.de", "Zoë@exämple.org"}


FORMULAS = [  # (name, tags, city) as a file gives them: cells a spreadsheet would run, and quoted ones
    ("=HYPERLINK(\"https://evil.example\",\"x\")", "policy", "+44 20 7946 0000"),
    ("-Ada", "-minus", "@home"),
    ("'Tis Ada", "policy", "'=quoted"),
    ("''=twice", "policy", "\t=tab"),
]


def _formula_file(tmp_path: Path) -> Path:
    lines = ["email,name,tags,status,=city"]
    lines += [f"reader{number}@example.org,{_quoted(name)},{tags},active,{_quoted(city)}"
              for number, (name, tags, city) in enumerate(FORMULAS)]
    lines.append("=sum@example.org,Eq,,active,")
    return write_csv(tmp_path / "formulas.csv", lines)


def _quoted(cell: str) -> str:
    return '"' + cell.replace('"', '""') + '"'


def test_export_defuses_formula_cells_and_import_restores_them(store: Store, tmp_path: Path) -> None:
    import_subscribers(store, _formula_file(tmp_path))
    stored = by_email(store)
    assert stored["reader0@example.org"].name == FORMULAS[0][0]
    assert stored["reader1@example.org"].tags == ("-minus",)
    assert stored["reader2@example.org"].name == "'Tis Ada"  # no formula follows the quote: kept
    assert stored["reader2@example.org"].attributes == {"=city": "=quoted"}  # the quote of a defused cell: off
    assert stored["reader3@example.org"].name == "'=twice"  # one quote off; the other is the name's own
    assert stored["reader3@example.org"].attributes == {"=city": "=tab"}  # cells are trimmed on import
    out = io.StringIO()
    export_subscribers(store, out)
    header, *rows_ = list(csv.reader(io.StringIO(out.getvalue())))
    assert header == ["email", "name", "tags", "status", "'=city"]
    cells = [cell for row in rows_ for cell in row]
    assert not [cell for cell in cells if cell[:1] in ("=", "+", "-", "@", "\t", "\r")], cells
    assert ["'=sum@example.org", "Eq", "", "active", ""] in rows_
    assert ["reader1@example.org", "'-Ada", "'-minus", "active", "'@home"] in rows_
    assert ["reader2@example.org", "'Tis Ada", "policy", "active", "'=quoted"] in rows_
    assert ["reader3@example.org", "''=twice", "policy", "active", "'=tab"] in rows_
    exported = tmp_path / "exported.csv"
    exported.write_text(out.getvalue(), encoding="utf-8")
    assert counts(import_subscribers(store, exported)) == (0, 0, 5, 0, 0)
    assert by_email(store) == stored


def test_cli_list_as_csv_defuses_formula_cells(run, project: Path, tmp_path: Path) -> None:
    assert run("subscribers", "import", str(_formula_file(tmp_path)))[0] == 0
    code, out, err = run("subscribers", "list", "--format", "csv")
    assert code == 0
    listed = list(csv.reader(io.StringIO(out)))
    assert ["reader0@example.org", "'" + FORMULAS[0][0], "policy", "active", "'+44 20 7946 0000"] in listed
    code, out, err = run("subscribers", "export", "--out", "all.csv")
    assert code == 0 and "'=sum@example.org" in (project / "all.csv").read_text(encoding="utf-8")


@pytest.mark.parametrize(("content", "message"), [
    (b"", "the file is empty"),
    (b"name,tags\nAda,policy\n", "the header has no email column"),
    (b"email,name,email\n", "column 'email' appears twice"),
    (b"email,name\nada@example.org,Ada\ngrace@example.org,Gr\xe2ce\n", r"3: not UTF-8 text \(byte 0xe2\)"),
    (b"email,name\nada@example.org,Ada\rgrace@example.org,Grace\n", "2: not CSV: new-line character seen"),
])
def test_a_file_that_cannot_be_read_writes_nothing(store: Store, tmp_path: Path, content: bytes,
                                                   message: str) -> None:
    path = tmp_path / "broken.csv"
    path.write_bytes(content)
    with pytest.raises(SubscriberError, match=message) as caught:
        import_subscribers(store, path)
    assert caught.value.path == path and str(path) in str(caught.value)
    assert rows(store) == 0


def test_non_utf8_names_the_line(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes("email,name\nada@example.org,Ada\ngrace@example.org,Grâce\n".encode("latin-1"))
    with pytest.raises(SubscriberError) as caught:
        import_subscribers(store, path)
    assert caught.value.line == 3
    assert str(caught.value).startswith(f"{path}:3: not UTF-8 text")


def test_a_missing_file(store: Store, tmp_path: Path) -> None:
    with pytest.raises(SubscriberError, match="file not found"):
        import_subscribers(store, tmp_path / "missing.csv")


def test_an_import_larger_than_one_chunk(store: Store, tmp_path: Path) -> None:
    lines = ["email,tags"] + [f"reader{number:05}@example.org,t{number % 3}" for number in range(2500)]
    path = write_csv(tmp_path / "many.csv", lines + ["reader00007@EXAMPLE.org,t1"])
    report = import_subscribers(store, path)
    assert counts(report) == (2500, 0, 0, 0, 1) and report.rejected[0].reason == "duplicate of line 9"
    assert count_audience(store, "t1") == 833
    assert counts(import_subscribers(store, path)) == (0, 0, 2500, 0, 1)


# Listing, audience, unsubscribe ------------------------------------------------------------------------------


def test_list_subscribers_streams_in_address_order(store: Store) -> None:
    import_subscribers(store, SAMPLE)
    listing = list_subscribers(store, tag="policy")
    assert iter(listing) is listing  # a generator, not a list
    assert [subscriber.email for subscriber in listing] == [
        "ada.lovelace@example.org", "former.reader@example.org", "grace.hopper@example.org",
        "katherine.johnson@example.org", "li.wei@example.org"]
    assert [s.email for s in list_subscribers(store, status="unsubscribed")] == ["former.reader@example.org"]
    with pytest.raises(SubscriberError, match="unknown status 'gone'"):
        list_subscribers(store, status="gone")
    with pytest.raises(SubscriberError, match="invalid tag"):
        list_subscribers(store, tag="no such")


def test_audience_respects_tags_status_and_suppressions(store: Store, tmp_path: Path) -> None:
    import_subscribers(store, SAMPLE)
    assert count_audience(store, None) == 6
    assert count_audience(store, "policy") == 4
    assert count_audience(store, "POLICY") == 4
    assert count_audience(store, "energy") == 2
    assert count_audience(store, "pol") == 0
    # A suppression (a provider's bounce, say) removes an address even while its status is active.
    with store.begin() as connection:
        connection.execute(insert(suppressions).values(email_key="li.wei@example.org", reason="provider",
                                                       source="test", created_at=utcnow()))
    assert count_audience(store, "policy") == 3
    assert by_email(store)["li.wei@example.org"].status == "active"


def test_an_underscore_in_a_tag_is_not_a_wildcard(store: Store, tmp_path: Path) -> None:
    import_subscribers(store, write_csv(tmp_path / "tags.csv", ["email,tags", "a@example.org,a-b",
                                                                "b@example.org,a_b"]))
    assert count_audience(store, "a_b") == 1 and count_audience(store, "a-b") == 1


def test_unsubscribe_is_idempotent(store: Store) -> None:
    import_subscribers(store, SAMPLE)
    assert unsubscribe(store, "alan.turing@example.org", reason="bounced", source="postmark") is True
    first = by_email(store)["alan.turing@example.org"]
    assert first.status == "bounced"
    assert unsubscribe(store, "alan.turing@example.org") is True
    second = by_email(store)["alan.turing@example.org"]
    assert (second.status, second.updated_at) == ("bounced", first.updated_at)  # the first reason stays
    assert rows(store, suppressions) == 1
    with store.begin() as connection:
        row = connection.execute(select(suppressions)).one()
    assert (row.email_key, row.reason, row.source) == ("alan.turing@example.org", "bounced", "postmark")
    with pytest.raises(SubscriberError, match="unknown reason"):
        unsubscribe(store, "alan.turing@example.org", reason="bored")
    with pytest.raises(SubscriberError, match="not an email address"):
        unsubscribe(store, "alan turing")


# Command line ------------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="newsletter", description="test")
    add_subscriber_commands(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    return parser


@pytest.fixture
def run(settings: Settings, capsys: pytest.CaptureFixture[str]):
    """Run a subscribers command as pipeline/cli.py's main() does; return (exit code, stdout, stderr)."""

    def run(*argv: str) -> tuple[int, str, str]:
        args = _parser().parse_args(argv)
        try:
            code = args.run(args, settings)
        except NewsletterError as exc:
            print(f"newsletter: error: {exc}", file=sys.stderr)
            code = exc.exit_code
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def test_every_subscribers_command_has_help_text() -> None:
    subparsers = _parser()._subparsers
    assert subparsers is not None
    group = subparsers._group_actions[0].choices["subscribers"]  # type: ignore[index]
    assert group.description
    commands = group._subparsers._group_actions[0].choices
    assert set(commands) == {"import", "list", "export", "unsubscribe"}
    for name, parser in commands.items():
        assert parser.description, name
        for action in parser._actions:
            assert action.help, (name, action.dest)


@pytest.mark.databases
def test_cli_import_exit_codes(run, project: Path) -> None:
    (project / "subscribers").mkdir()
    shutil.copy(SAMPLE, project / "subscribers" / "subscribers.csv")
    code, out, err = run("subscribers", "import", "subscribers.csv", "--dry-run")
    assert code == 0 and err == ""
    assert out.startswith("dry run, nothing written: ") and "7 added" in out

    code, out, err = run("subscribers", "import", "subscribers.csv")
    assert code == 0 and "7 added, 0 updated, 0 unchanged, 0 kept unsubscribed, 0 rejected (7 line(s))" in out

    bad = write_csv(project / "bad.csv", BAD_LINES, ending="\r\n")
    code, out, err = run("subscribers", "import", str(bad))
    assert code == 1
    assert err.splitlines() == [f"{bad}:{line}: {reason}" for line, reason in BAD_REASONS.items()]
    assert "5 added" in out and "10 rejected (15 line(s))" in out

    code, out, err = run("subscribers", "unsubscribe", "ada@example.org")
    assert code == 0 and out == "unsubscribed ada@example.org (unsubscribed)\n"
    code, out, err = run("subscribers", "import", str(bad))
    assert code == 1 and "1 kept unsubscribed" in out and "--resubscribe" in out


def test_cli_import_of_an_unreadable_file_exits_2(run, project: Path) -> None:
    latin = project / "latin1.csv"
    latin.write_bytes("email,name\nmaria@example.org,Maria Skłodowska\n".encode("cp1250"))
    code, out, err = run("subscribers", "import", str(latin))
    assert code == 2 and out == ""
    assert err.splitlines() == [f"newsletter: error: {latin}:2: not UTF-8 text (byte 0xb3): save the file as "
                                "UTF-8 CSV"]
    code, out, err = run("subscribers", "import", "missing.csv")
    assert code == 2 and err == "newsletter: error: missing.csv: file not found\n"


@pytest.mark.databases
def test_cli_list_export_unsubscribe(run, project: Path) -> None:
    assert run("subscribers", "import", str(SAMPLE))[0] == 0
    code, out, err = run("subscribers", "list", "--tag", "cyber")
    assert code == 0 and out.splitlines()[-1] == "2 subscriber(s)" and "alan.turing@example.org" in out
    code, out, err = run("subscribers", "list", "--status", "unsubscribed", "--format", "json")
    assert [entry["email"] for entry in json.loads(out)] == ["former.reader@example.org"]
    assert json.loads(run("subscribers", "list", "--tag", "none", "--format", "json")[1]) == []
    code, out, err = run("subscribers", "list", "--format", "csv")
    assert out.splitlines()[0] == "email,name,tags,status" and len(out.splitlines()) == 8

    code, out, err = run("subscribers", "export", "--tag", "energy")
    assert code == 0 and len(out.splitlines()) == 3 and err == "exported 2 subscriber(s)\n"
    code, out, err = run("subscribers", "export", "--out", "all.csv")
    assert code == 0 and out == "exported 7 subscriber(s) to all.csv\n"
    assert (project / "all.csv").read_text(encoding="utf-8").count("\n") == 8
    assert not (project / "all.csv.part").exists()

    code, out, err = run("subscribers", "unsubscribe", "nobody@example.org")
    assert code == 0 and "not a subscriber" in out
    code, out, err = run("subscribers", "unsubscribe", "nobody")
    assert code == 2 and err.startswith("newsletter: error: not an email address: 'nobody'")
    code, out, err = run("subscribers", "list", "--tag", "bad tag")
    assert code == 2 and "invalid tag 'bad tag'" in err


def test_a_quote_left_open_is_one_rejected_line(store: Store, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "open.csv", ["email,name", 'ada@example.org,"Ada', "grace@example.org,Grace", ""])
    report = import_subscribers(store, path)
    assert counts(report) == (0, 0, 0, 0, 1) and report.total_lines == 1
    assert report.rejected[0].line == 2 and "is a quote left open?" in report.rejected[0].reason
    assert report.rejected[0].text == 'ada@example.org,"Ada\ngrace@example.org,Grace'
