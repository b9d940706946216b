"""Analyses over trained models and interpreters: leaderboard, sanity checks, global effects, concepts, prototypes."""
