"""The ``nsml-etl`` group, gathering one command per module of this package.

Exit codes: 0 all exported, 1 some pairs failed (the rest landed), 2 usage or bad input,
3 authentication failed, 4 database error, 70 an unexpected error (a bug), 74 the
--save-raw archive could not be written, 130/143 interrupted by SIGINT/SIGTERM."""

from __future__ import annotations

import click

from .. import __version__
from ._common import Group, attach_closed_stdout, keep_stderr_usable
from .check import check
from .export import export
from .gpu_servers import gpu_servers
from .load import load
from .pairs import pairs_command
from .report import report
from .simulate import simulate
from .views import views


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="nsml-etl")
def main() -> None:
    """Export CLOVA NSML runs into a SQL table.

    Exit codes: 0 all exported; 1 some pairs failed (the rest landed) or the API quota is
    spent; 2 usage or bad input; 3 authentication failed; 4 database error; 70 unexpected
    error (a bug); 74 the --save-raw archive could not be written; 130/143 interrupted; 141
    the reader of stdout quit early, or stdout is closed.
    """
    keep_stderr_usable()
    attach_closed_stdout()


for _command in (export, load, pairs_command, views, check, gpu_servers, report, simulate):
    main.add_command(_command)
