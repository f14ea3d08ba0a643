"""The demo workspace: a dashboard with content on every page (``make demo``, docs/demo.md).

:func:`build_workspace` fills a running SegBoard through the service layer at a size from
:data:`PROFILES`; :func:`main` (``python -m worker.demo``) starts ``segboard up`` on a workspace
folder, prints its URL and builds the workspace while the dashboard runs.
"""

from worker.demo._build import (
    PROFILES,
    DemoData,
    DemoFailed,
    DemoStopped,
    Profile,
    build_workspace,
    prepare_data,
)
from worker.demo._launch import Workspace, build, main, serve, wait_ready

__all__ = [
    "PROFILES",
    "DemoData",
    "DemoFailed",
    "DemoStopped",
    "Profile",
    "Workspace",
    "build",
    "build_workspace",
    "main",
    "prepare_data",
    "serve",
    "wait_ready",
]
