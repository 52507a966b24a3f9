"""Data: find images (layout), decode them (io), split them (split), cache and batch them."""
from __future__ import annotations

from pneumo.data.cache import cached_images
from pneumo.data.layout import CLASSES, PATHOGEN_CLASSES, Dataset, Record, discover
from pneumo.data.split import split_records

__all__ = ["CLASSES", "PATHOGEN_CLASSES", "Dataset", "Record", "discover", "cached_images", "split_records"]
