"""Data layer: preparation (download, verify, manifests), loading, synthetic scenes."""
