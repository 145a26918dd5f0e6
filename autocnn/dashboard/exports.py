"""Export best: `autocnn.export.export_trial` in a background thread, then one zip to download.

The export folder is `<artifact folder>/export-best/` and the archive `<artifact folder>/export-best.zip`;
both outlive the dashboard, so a restarted dashboard still offers the last export.
"""
from __future__ import annotations

import os
import threading
import zipfile
from datetime import datetime
from pathlib import Path
from typing import Callable

from autocnn.dashboard.state import DashboardError, inspect

EXPORT_DIR = "export-best"
ARCHIVE = "export-best.zip"


class Exports:
    def __init__(self, storage, storage_url: str, artifact_dir: Callable[[str], Path]) -> None:
        self.storage = storage
        self.storage_url = storage_url
        self.artifact_dir = artifact_dir
        self._lock = threading.Lock()
        self._jobs: dict[str, dict] = {}

    def archive(self, name: str) -> Path:
        return self.artifact_dir(name) / ARCHIVE

    def status(self, name: str) -> dict:
        job = dict(self._jobs.get(name) or {})
        folder = self.artifact_dir(name) / EXPORT_DIR
        archive = self.archive(name)
        if not job:
            job = {"status": "done" if archive.is_file() else "none"}
        if job["status"] == "done" and archive.is_file():
            job["zip"] = f"/api/autocnn/studies/{name}/export.zip"
            job["files"] = sorted(p.name for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
            job["folder"] = str(folder)
        return job

    def start(self, name: str) -> dict:
        """Begin exporting the best trial of `name` (202); a running export is not started twice."""
        view = inspect(self.storage, name)
        if not view.counts.get("complete"):
            raise DashboardError(409, f"study {name!r} has no complete trial to export yet")
        with self._lock:
            if (self._jobs.get(name) or {}).get("status") == "running":
                return self.status(name)
            self._jobs[name] = {"status": "running", "started": datetime.now().isoformat(timespec="seconds")}
        threading.Thread(target=self._run, args=(name,), daemon=True, name=f"autocnn-export-{name}").start()
        return self.status(name)

    def _run(self, name: str) -> None:
        folder = self.artifact_dir(name)
        try:
            from autocnn.export import export_trial

            folder.mkdir(parents=True, exist_ok=True)
            out = folder / EXPORT_DIR
            export_trial(name, self.storage_url, "best", out=str(out), force=True)
            partial = folder / (ARCHIVE + ".part")
            with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as zf:
                for path in sorted(out.rglob("*")):
                    if path.is_file():
                        zf.write(path, arcname=f"{name}-best/{path.relative_to(out)}")
            os.replace(partial, self.archive(name))
            result = {"status": "done"}
        except ImportError as err:
            result = {"status": "error", "error": f"export is not available in this installation ({err})"}
        except Exception as err:  # reported to the page, the dashboard keeps serving
            result = {"status": "error", "error": str(err) or type(err).__name__}
        result["finished"] = datetime.now().isoformat(timespec="seconds")
        with self._lock:
            self._jobs[name] = {**self._jobs.get(name, {}), **result}
