"""Generators of fake data for tests and bench/: metadata, workdirs, records, a fake Danbooru API, i2v files."""
