"""Synthetic designs with ground truth: event scenes, music, BirdSet-style soundscapes."""
