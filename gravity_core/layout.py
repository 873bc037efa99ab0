"""The run layout: every path of a run directory, in one place.

Flows and tasks ask a `RunLayout` for a path and never spell an artifact name themselves.
Pure: building paths touches no filesystem. Per-method folders (`train/<method>/`,
`generate/<method>/`) let baselines and their adapters sit beside GRAVITY's own.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

GRAVITY = "gravity"
# The ingest stage's files, by kind (tasks.ingest_io writes them into RUN_DIR/ingest/).
INGEST_FILES: dict[str, str] = {"review": "reviews.parquet", "book": "books.parquet", "user": "users.parquet",
                                "quarantine": "quarantine.parquet"}
# `targets` picks the books every method describes; `baselines`, `judge`, `report` evaluate them.
STAGES: tuple[str, ...] = ("ingest", "profiles", "scenarios", "pairs", "train", "targets", "generate", "baselines",
                           "judge", "report")
ORIGINAL = "original"


@dataclass(frozen=True)
class RunLayout:
    """Paths of one run directory (RUN_DIR)."""

    root: Path

    @classmethod
    def of(cls, run_dir: str | Path) -> "RunLayout":
        return cls(Path(os.path.abspath(Path(run_dir).expanduser())))

    def stage_dir(self, stage: str) -> Path:
        return self.root / stage

    def relative(self, path: str | Path) -> str:
        """A path inside the run, relative to RUN_DIR (as the manifest records it)."""
        return str(Path(os.path.abspath(path)).relative_to(self.root))

    # run-wide files
    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def manifest_lock(self) -> Path:
        return self.root / ".manifest.lock"

    @property
    def ledger(self) -> Path:
        return self.root / "ledger.parquet"

    @property
    def ledger_parts(self) -> Path:
        """Ledger rows flushed since the last compaction (one parquet file per flush)."""
        return self.root / "ledger.parts"

    @property
    def ledger_lock(self) -> Path:
        return self.root / "ledger.lock"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def model_quarantine(self, stage: str) -> Path:
        return self.root / "quarantine" / f"{stage}_model_outputs.parquet"

    # ingest
    @property
    def ingest_dir(self) -> Path:
        return self.root / "ingest"

    @property
    def reviews(self) -> Path:
        return self.ingest_dir / INGEST_FILES["review"]

    @property
    def books(self) -> Path:
        return self.ingest_dir / INGEST_FILES["book"]

    @property
    def users(self) -> Path:
        return self.ingest_dir / INGEST_FILES["user"]

    @property
    def ingest_quarantine(self) -> Path:
        return self.ingest_dir / INGEST_FILES["quarantine"]

    @property
    def cohort(self) -> Path:
        return self.root / "ingest" / "cohort.parquet"

    @property
    def cohort_funnel(self) -> Path:
        return self.root / "ingest" / "cohort_funnel.parquet"

    @property
    def genre_coverage(self) -> Path:
        return self.root / "ingest" / "genre_coverage.json"

    # profiles
    @property
    def profiles(self) -> Path:
        return self.root / "profiles" / "profiles.parquet"

    @property
    def stances(self) -> Path:
        return self.root / "profiles" / "stances.parquet"

    @property
    def profile_users(self) -> Path:
        return self.root / "profiles" / "users"

    def profile_json(self, user_id: str) -> Path:
        return self.profile_users / f"{user_id}.json"

    @property
    def profile_failures(self) -> Path:
        return self.root / "profiles" / "failures.parquet"

    @property
    def agreement(self) -> Path:
        return self.root / "profiles" / "agreement.json"

    # scenario pool
    @property
    def pool(self) -> Path:
        return self.root / "scenarios" / "pool.parquet"

    # preference pairs
    @property
    def pairs(self) -> Path:
        return self.root / "pairs" / "pairs.parquet"

    @property
    def pairs_hf(self) -> Path:
        return self.root / "pairs" / "hf"

    @property
    def usersft(self) -> Path:
        return self.root / "pairs" / "usersft"

    @property
    def prefalign_pairs(self) -> Path:
        return self.root / "pairs" / "prefalign.parquet"

    @property
    def prefalign_hf(self) -> Path:
        return self.root / "pairs" / "prefalign"

    def training_data(self, method: str = GRAVITY) -> Path:
        """The HF dataset a method trains on: GRAVITY's pairs (DPO, or their chosen side for
        GRAVITY-SFT), the users' own reviews (UserSFT) or PrefAlign's demographic pairs."""
        return {"user_sft": self.usersft, "prefalign": self.prefalign_hf}.get(method, self.pairs_hf)

    # training, one folder per method
    def train_dir(self, method: str = GRAVITY) -> Path:
        return self.root / "train" / method

    def adapter(self, method: str = GRAVITY) -> Path:
        return self.train_dir(method) / "adapter"

    def checkpoints(self, method: str = GRAVITY) -> Path:
        return self.train_dir(method) / "checkpoints"

    def train_metrics(self, method: str = GRAVITY) -> Path:
        return self.train_dir(method) / "metrics.jsonl"

    def heldout_eval(self, method: str = GRAVITY) -> Path:
        return self.train_dir(method) / "heldout_eval.json"

    # generation, one folder per method
    def generate_dir(self, method: str = GRAVITY) -> Path:
        return self.root / "generate" / method

    def generations(self, method: str = GRAVITY) -> Path:
        return self.generate_dir(method) / "generations.parquet"

    # evaluation: one target set per run, the judge's verdicts, the report
    @property
    def evaluate_dir(self) -> Path:
        return self.root / "evaluate"

    @property
    def targets(self) -> Path:
        return self.evaluate_dir / "targets.parquet"

    @property
    def verdicts(self) -> Path:
        return self.evaluate_dir / "verdicts.parquet"

    @property
    def sanity_verdicts(self) -> Path:
        return self.evaluate_dir / "sanity.parquet"

    @property
    def similarity(self) -> Path:
        return self.evaluate_dir / "similarity.parquet"

    # ablations (Table 5): one sub-run per ablation, one judge run over all of them
    def ablation_dir(self, name: str) -> Path:
        return self.root / "ablations" / name

    @property
    def ablation_judge_dir(self) -> Path:
        return self.root / "ablations" / "_judge"

    @property
    def generate_root(self) -> Path:
        return self.root / "generate"

    @property
    def report_dir(self) -> Path:
        return self.root / "report"

    @property
    def report_md(self) -> Path:
        return self.report_dir / "report.md"

    @property
    def report_html(self) -> Path:
        return self.report_dir / "report.html"

    @property
    def report_metrics(self) -> Path:
        return self.report_dir / "metrics.parquet"

    @property
    def ablations(self) -> Path:
        """Table 5's input, one row per ablated model (`gravity_core.evaluation.report.ABLATION_SCHEMA`)."""
        return self.root / "report" / "ablations.parquet"
