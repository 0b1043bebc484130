"""Stage 1, filter: Danbooru metadata -> the table of posts to crop."""

from curate.filter.rules import FilterRules, PostFilter

__all__ = ["FilterRules", "PostFilter"]
