"""What several commands share: the draft argument, a send id, the check gate's options, output formats."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipeline.config import Settings
    from pipeline.store import Store

MAX_ID = 2**63 - 1  # the largest id a database row can have


def parse_send_id(text: str) -> int:
    """A send id as typed: a positive whole number that a database id can be."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a send id: {text!r} (a number; see 'newsletter logs')") from None
    if not 0 < value <= MAX_ID:
        raise argparse.ArgumentTypeError(f"no send has the id {text} (see 'newsletter logs')")
    return value


@contextmanager
def opened_store(settings: Settings) -> Iterator[Store]:
    """The settings' store, migrated, closed when the command is done (imported here, when a command needs it)."""
    from pipeline.store import Store

    store = Store.from_settings(settings)
    try:
        yield store
    finally:
        store.dispose()


def add_draft(parser: argparse.ArgumentParser, *, optional: bool = False) -> None:
    parser.add_argument("draft", metavar="DRAFT", nargs="?" if optional else None,
                        help="draft folder, or its name under the drafts folder")


def add_gate(parser: argparse.ArgumentParser, verb: str) -> None:
    """--offline, --force and --reason: how the check gate in front of a send or a schedule is passed."""
    parser.add_argument("--offline", action="store_true", help="check gate without requesting links")
    parser.add_argument("--force", action="store_true", help=f"{verb} although the checks found errors")
    parser.add_argument("--reason", help="why the checks are overridden (recorded with the send)")


def add_format(parser: argparse.ArgumentParser, *choices: str) -> None:
    parser.add_argument("--format", choices=choices, default=choices[0],
                        help=f"output format (default: {choices[0]})")


def draft_folder(name: str, settings: Settings) -> Path:
    """A draft given as a path, or as a folder name under the drafts folder."""
    path = Path(name)
    if path.is_dir() or path.is_absolute() or len(path.parts) > 1:
        return path
    return settings.paths.drafts / name
