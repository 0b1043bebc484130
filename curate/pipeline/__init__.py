"""Pipeline files (pipelines/*.toml) and `curate run`."""
