"""What a run did, read back from its manifest (for the pipeline's result and the console)."""
from __future__ import annotations

from gravity_core.layout import RunLayout
from tasks.rundir import read_manifest


def summarize_run(layout: RunLayout) -> dict:
    """{run_dir, manifest, logs, stages: {name: status, seconds, model_calls, failures, folder}}."""
    manifest = read_manifest(layout)
    stages = {} if manifest is None else {
        name: {"status": rec.status, "seconds": rec.seconds, "model_calls": rec.model_calls,
               "failures": len(rec.failures), "folder": str(layout.stage_dir(name))}
        for name, rec in manifest.stages.items()}
    return {"run_dir": str(layout.root), "manifest": str(layout.manifest), "logs": str(layout.logs), "stages": stages}
