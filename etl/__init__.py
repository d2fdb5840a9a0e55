"""nsml-etl: export CLOVA NSML runs into a SQL table.

The public API, all importable from here (README, "Python API"): :func:`export` and
:func:`load`, which return an :class:`ExportReport`; one function per other command
(:func:`write_run_list`, :func:`create_views`, :func:`build_report`, :func:`set_gpu_server`,
:func:`unset_gpu_servers`, :func:`load_gpu_servers`, :func:`list_gpu_servers`);
:class:`Credentials` and :class:`Settings`; and the exceptions, all under :class:`EtlError`.
Importing the package is cheap: pandas, SQLAlchemy and requests are imported by the first export
or load.
"""

import logging

from .api import (
    GpuServerList,
    ReportTables,
    build_report,
    create_views,
    export,
    list_gpu_servers,
    load,
    load_gpu_servers,
    set_gpu_server,
    unset_gpu_servers,
    write_run_list,
)
from .config import Credentials, Settings
from .errors import (
    AuthenticationError,
    BadLinesError,
    DatabaseError,
    EtlError,
    InputError,
    OutputError,
    QuotaExhausted,
)
from .outcome import ExportReport, FailedPair

__version__ = "0.1.0"

__all__ = [
    "AuthenticationError",
    "BadLinesError",
    "Credentials",
    "DatabaseError",
    "EtlError",
    "ExportReport",
    "FailedPair",
    "GpuServerList",
    "InputError",
    "OutputError",
    "QuotaExhausted",
    "ReportTables",
    "Settings",
    "build_report",
    "create_views",
    "export",
    "list_gpu_servers",
    "load",
    "load_gpu_servers",
    "set_gpu_server",
    "unset_gpu_servers",
    "write_run_list",
]

# A library configures no logging: records go to the application's handlers (Airflow's task
# log, say), and without any they are dropped rather than printed by logging's last resort.
logging.getLogger(__name__).addHandler(logging.NullHandler())
