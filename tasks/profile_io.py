"""I/O tasks around the per-user profile tasks: load inputs, write profiles."""
from __future__ import annotations

import polars as pl
from prefect import task
from prefect.cache_policies import NO_CACHE

from gravity_core.banks import SeedStatement, bank_version, parse_seed_statements, select_seeds
from gravity_core.layout import RunLayout
from gravity_core.profile.assemble import assemble_profile, build_user_inputs, profiles_frame, stances_frame
from gravity_core.profile.records import Profile, UserInput
from gravity_core.recipe import BanksConfig, Recipe
from tasks.bank_io import read_bank_text
from tasks.llm.client import ModelClient
from tasks.profiles import PROFILE_PROMPTS
from tasks.records_io import write_profile
from tasks.resources import prompt_versions, resolve_path
from tasks.rundir import write_parquet_atomic


@task(name="load-user-inputs")
def load_user_inputs(layout: RunLayout) -> list[UserInput]:
    """One input record per cohort user: reviews joined to books, given attributes."""
    users = pl.read_parquet(layout.users) if layout.users.exists() else None
    return build_user_inputs(pl.read_parquet(layout.reviews), pl.read_parquet(layout.books),
                             pl.read_parquet(layout.cohort), users)


def user_ids(users: list[UserInput]) -> list[str]:
    return [u.user_id for u in users]


def country_options(recipe: Recipe) -> list[str]:
    """The countries an inferred country is chosen from: the cohort's, else the profiles section's."""
    return recipe.cohort.countries or recipe.profiles.country_options


@task(name="load-seed-statements")
def load_seeds(banks: BanksConfig, seed: int) -> tuple[list[SeedStatement], str]:
    """The recipe's (balanced) subset of seed statements and the bank version."""
    text = read_bank_text("seed_statements", resolve_path(banks.seed_statements))
    return select_seeds(parse_seed_statements(text), banks.seed_limit, seed, banks.include_seeds), bank_version(text)


def _provenance_models(client: ModelClient) -> dict[str, str]:
    identity = client.backend.identity
    return {"llm": f"{identity.backend}/{identity.model}" + (f"+{identity.adapter}" if identity.adapter else "")}


@task(name="write-profiles", cache_policy=NO_CACHE)
def write_profiles(layout: RunLayout, users: list[UserInput], facets: dict[str, dict], failures: dict[str, str],
                   client: ModelClient, seeds_version: str) -> dict:
    """profiles.parquet, stances.parquet, one JSON per user, failures.parquet. Returns row counts."""
    profiles: list[Profile] = []
    for user in users:
        if user.user_id in failures:
            continue
        f = {name: facets[name][user.user_id] for name in facets}
        profiles.append(assemble_profile(user, f["demographics"], f["interests"], f["values"], f["personality"],
                                         f["summary"], _provenance_models(client), prompt_versions(PROFILE_PROMPTS),
                                         {"seed_statements": seeds_version}))
    for profile in profiles:
        write_profile(layout, profile)
    kept = {f"{p.user_id}.json" for p in profiles}
    for stale in layout.profile_users.glob("*.json"):  # users of an earlier run that failed or left
        if stale.name not in kept:
            stale.unlink()
    write_parquet_atomic(profiles_frame(profiles), layout.profiles)
    write_parquet_atomic(stances_frame(profiles), layout.stances)
    write_parquet_atomic(pl.DataFrame({"user_id": list(failures), "reason": list(failures.values())},
                                      schema={"user_id": pl.String, "reason": pl.String}), layout.profile_failures)
    return {"profiles": len(profiles), "stances": sum(len(p.values.stances) for p in profiles),
            "failed_users": len(failures)}
