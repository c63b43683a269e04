"""datasetd: serves daily dataset files by signed URL (`/v1/files/`) behind Envoy, and is
the process the daily dataset build job runs in (a background task of `server.serve`).

Public surface (the CLI, the supervisor and the tests import these names only):
"""

from datasetd.files import FileMetrics, ManifestCache, make_app
from datasetd.server import BACKGROUND_TASKS, BackgroundTask, TaskContext, build_app, serve

__all__ = ["BACKGROUND_TASKS", "BackgroundTask", "FileMetrics", "ManifestCache", "TaskContext",
           "build_app", "make_app", "serve"]
