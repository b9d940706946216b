"""The Brains (classifiers, interpreters, post-hoc explainers), their checkpoints and losses."""
