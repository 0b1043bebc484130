"""curate: build a clean StyleGAN portrait dataset from Danbooru, stage by stage."""

__version__ = "0.1.0"
