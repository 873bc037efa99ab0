"""I/O tasks around the per-user profile tasks: load inputs, write profiles."""
from __future__ import annotations

import json
from pathlib import Path

import polars as pl
from prefect import task

from gravity_core.banks import SeedStatement, bank_version, select_seeds
from gravity_core.profile.assemble import assemble_profile, build_user_inputs, profiles_frame, stances_frame
from gravity_core.profile.records import Profile, UserInput
from gravity_core.recipe import BanksConfig
from tasks.bank_io import read_bank_text
from tasks.resources import resolve_path
from tasks.rundir import write_parquet_atomic, write_text_atomic


@task(name="load-user-inputs")
def load_user_inputs(ingest_dir: str, cohort_dir: str) -> list[UserInput]:
    ingest = Path(ingest_dir)
    users = pl.read_parquet(ingest / "users.parquet") if (ingest / "users.parquet").exists() else None
    return build_user_inputs(pl.read_parquet(ingest / "reviews.parquet"), pl.read_parquet(ingest / "books.parquet"),
                             pl.read_parquet(Path(cohort_dir) / "cohort.parquet"), users)


def read_profiles(run_dir: Path) -> list[dict]:
    """Every profile JSON of a run (RUN_DIR/profiles/users/*.json), sorted by user id."""
    return [json.loads(p.read_text()) for p in sorted((Path(run_dir) / "profiles" / "users").glob("*.json"))]


@task(name="load-seed-statements")
def load_seeds(banks: BanksConfig, seed: int) -> tuple[list[SeedStatement], str]:
    """The recipe's (balanced) subset of seed statements and the bank version."""
    from gravity_core.banks import parse_seed_statements
    text = read_bank_text("seed_statements", resolve_path(banks.seed_statements))
    return select_seeds(parse_seed_statements(text), banks.seed_limit, seed, banks.include_seeds), bank_version(text)


@task(name="write-profiles")
def write_profiles(out_dir: str, users: list[UserInput], facets: dict[str, dict], failures: dict[str, str],
                   models: dict[str, str], prompts: dict[str, str], banks: dict[str, str]) -> dict:
    """profiles.parquet, stances.parquet, one JSON per user, failures.parquet. Returns row counts."""
    out = Path(out_dir)
    profiles: list[Profile] = []
    for user in users:
        if user.user_id in failures:
            continue
        f = {name: facets[name][user.user_id] for name in facets}
        profiles.append(assemble_profile(user, f["demographics"], f["interests"], f["values"],
                                         f["personality"], f["summary"], models, prompts, banks))
    for profile in profiles:
        payload = {**profile.model_dump(mode="json"), "profile_version": profile.profile_version}
        write_text_atomic(out / "users" / f"{profile.user_id}.json", json.dumps(payload, indent=2))
    write_parquet_atomic(profiles_frame(profiles), out / "profiles.parquet")
    write_parquet_atomic(stances_frame(profiles), out / "stances.parquet")
    write_parquet_atomic(pl.DataFrame({"user_id": list(failures), "reason": list(failures.values())},
                                      schema={"user_id": pl.String, "reason": pl.String}), out / "failures.parquet")
    return {"profiles": len(profiles), "stances": sum(len(p.values.stances) for p in profiles),
            "failed_users": len(failures)}
