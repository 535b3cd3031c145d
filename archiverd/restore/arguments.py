"""The options `ls`, `get` and `verify` add to the shared filters, importing only argparse.

Every command builds the whole command tree (`archiverd.cli.build_parser`), so what these
functions import, every `archiverd` run pays for: `get` would load `verify`'s pipeline and
`ls` the decryption stack (AES-GCM, inflate) just to parse its argv. The pipeline modules
load in the command that runs (tests/service/test_startup_cost.py pins which).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

DEFAULT_PARALLEL = 4
"""`get --parallel`: downloads at once."""


def add_url_arguments(parser: argparse.ArgumentParser) -> None:
    """``--url`` (and its endpoint/region) for `ls`, `get` and `verify`."""
    parser.add_argument(
        "--url",
        help="read this one bucket (s3://bucket/prefix/ or file:///dir) instead of the "
        "configured destination and archives; no config file needed",
    )
    parser.add_argument("--endpoint-url", help="with --url: S3 endpoint (empty: AWS)")
    parser.add_argument("--region", help="with --url: S3 region (default us-east-1)")


def add_ls_arguments(parser: argparse.ArgumentParser) -> None:
    """Options `ls` adds to the shared filters."""
    _lookback_arg(parser)
    parser.add_argument(
        "--long", "-l", action="store_true", help="also show name and lines (one HEAD per object)"
    )


def add_get_arguments(parser: argparse.ArgumentParser) -> None:
    """Options `get` adds to the shared filters."""
    _lookback_arg(parser)
    parser.add_argument(
        "--parallel",
        type=int,
        default=DEFAULT_PARALLEL,
        metavar="N",
        help=f"downloads at once (default {DEFAULT_PARALLEL})",
    )
    parser.add_argument(
        "--allow-gaps",
        action="store_true",
        help="restore streams with holes too, with a warning per hole (default: refuse them)",
    )


def add_verify_arguments(parser: argparse.ArgumentParser) -> None:
    """Options `verify` adds to the shared filters."""
    parser.add_argument(
        "--versions", action="store_true", help="verify every stored version, not only the latest"
    )
    parser.add_argument("--json", action="store_true", help="the summary as one JSON object")
    parser.add_argument(
        "--key-file", type=Path, action="append", help="master key; repeat for old keys"
    )
    parser.add_argument(
        "--parallel",
        type=int,
        default=os.cpu_count() or 1,
        metavar="N",
        help="objects verified at once, one worker thread each (default: one per core)",
    )
    _lookback_arg(parser)


def _lookback_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--lookback",
        metavar="DURATION",
        help="with --since: also search partitions this far before it for segments that "
        "began earlier (default 1d)",
    )
