"""Dataset store, ingest, data contracts, sandboxed SQL, snapshots, splits and augmentation."""
