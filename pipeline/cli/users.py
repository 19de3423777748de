"""The ``users`` commands: staff accounts of the console (``newsletter serve``, under /staff/)."""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import TYPE_CHECKING

from pipeline.cli.common import opened_store
from pipeline.errors import NewsletterError

if TYPE_CHECKING:
    from pipeline.config import Settings

CLI = "cli"  # who the audit log says acted, for a change made at the command line


def add_commands(commands: argparse._SubParsersAction) -> None:
    users = commands.add_parser("users", help="staff accounts of the console: add, list, passwd, token, remove",
                                description="Staff accounts of the console at <base_url>/staff/. Viewers read; "
                                            "editors also act on sends and schedules; admins also manage staff.")
    actions = users.add_subparsers(dest="action", metavar="ACTION", required=True)
    add = actions.add_parser("add", help="add an account (the password is prompted for)",
                             description="Add a staff account with a role; the password (12 characters or more) "
                                         "is prompted for twice, or read from standard input.")
    add.add_argument("name", metavar="NAME", help="1 to 64 lower-case letters, digits, ., _ or -")
    add.add_argument("--role", choices=("viewer", "editor", "admin"), required=True,
                     help="viewer reads; editor also acts on sends and schedules; admin also manages staff")
    add.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    add.set_defaults(run=add_command)
    show = actions.add_parser("list", help="the accounts and their roles",
                              description="List the staff accounts, their roles and whether each has an API token.")
    show.set_defaults(run=list_command)
    passwd = actions.add_parser("passwd", help="set a new password (every session of the account ends)",
                                description="Set a new password for an account; every session it has ends.")
    passwd.add_argument("name", metavar="NAME", help="the account")
    passwd.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    passwd.set_defaults(run=passwd_command)
    token = actions.add_parser("token", help="make a new API token for scripts (shown once; the old one stops)",
                               description="Print a new API token for the account's scripts (the JSON twins of "
                                           "the console's pages); it is shown once, and the old one stops working.")
    token.add_argument("name", metavar="NAME", help="the account")
    token.set_defaults(run=token_command)
    remove = actions.add_parser("remove", help="remove an account",
                                description="Remove a staff account and end its sessions; the audit log keeps "
                                            "its name.")
    remove.add_argument("name", metavar="NAME", help="the account")
    remove.set_defaults(run=remove_command)


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if not sys.stdin.isatty():
        raise NewsletterError("no terminal to ask for the password on: use --password-stdin")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Again: ") != first:
        raise NewsletterError("the two passwords differ")
    return first


def add_command(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline import accounts

    accounts.checked_name(args.name)
    password = _password(args)
    with opened_store(settings) as store:
        accounts.add(store, args.name, args.role, password, by=CLI)
    print(f"added {args.name} ({args.role})")
    return 0


def list_command(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.store import staff

    with opened_store(settings) as store:
        found = staff.users(store)
    print(f"{'NAME':<24} {'ROLE':<8} {'API TOKEN':<10} CREATED")
    for user in found:
        print(f"{user.name:<24} {user.role:<8} {'yes' if user.has_token else '-':<10} "
              f"{user.created_at:%Y-%m-%d %H:%MZ}")
    print(f"{len(found)} user(s)")
    return 0


def passwd_command(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline import accounts

    password = _password(args)
    with opened_store(settings) as store:
        accounts.change_password(store, args.name, password, by=CLI)
    print(f"new password for {args.name}; their sessions have ended")
    return 0


def token_command(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline import accounts

    with opened_store(settings) as store:
        token = accounts.new_token(store, args.name, by=CLI)
    print(token)
    print(f"the API token of {args.name}: send it as 'Authorization: Bearer <token>'; it is not shown again",
          file=sys.stderr)
    return 0


def remove_command(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline import accounts

    with opened_store(settings) as store:
        accounts.remove(store, args.name, by=CLI)
    print(f"removed {args.name}")
    return 0
