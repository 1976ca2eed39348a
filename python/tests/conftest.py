"""Shared settings of the metarim Python tests.

``METARIM_TEST_SEEDS`` (default 20) sets the seeds per level of the equality tests and
``METARIM_TEST_SEED_BASE`` (default 0) where they start, so other seeds can be checked."""

import os

SEEDS = int(os.environ.get("METARIM_TEST_SEEDS", "20"))
SEED_BASE = int(os.environ.get("METARIM_TEST_SEED_BASE", "0"))
