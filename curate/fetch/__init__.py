"""Stage 0, fetch: a small sample of posts from the Danbooru API, in the dump layout."""
