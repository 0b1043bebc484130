"""Stage 2, crop: source images -> 512x256 portrait crops around each anime face."""

from curate.crop.cropper import CropConfig, Cropper, ImageResult, Source

__all__ = ["CropConfig", "Cropper", "ImageResult", "Source"]
