"""The Kaggle copy of the dataset, through the official `kagglehub` client and the user's API token:
its own errors (no package, no token, an old client, a failed download) become one line that says
what to do."""

from __future__ import annotations

import inspect
import logging
from pathlib import Path

from pneumo.errors import PneumoError

__all__ = ["KAGGLE_HANDLE", "download_from_kaggle"]

logger = logging.getLogger(__name__)

KAGGLE_HANDLE = "paultimothymooney/chest-xray-pneumonia"
_KAGGLE_TOKEN_HELP = (
    "create an API token at kaggle.com → Settings → API and put it in ~/.kaggle/kaggle.json, or set KAGGLE_USERNAME and KAGGLE_KEY"
)


def download_from_kaggle(folder: Path) -> Path:
    """The Kaggle copy through kagglehub, which needs the user's API token; where the client put it."""
    try:
        import kagglehub
    except ImportError:
        raise PneumoError(
            "the kaggle source needs the kagglehub package: pip install kagglehub (the mendeley source needs nothing more)"
        ) from None
    try:
        from kagglehub.config import get_kaggle_credentials
    except ImportError:
        raise PneumoError("this kagglehub is too old for pneumo: pip install -U kagglehub") from None
    try:
        credentials = get_kaggle_credentials()
    except ValueError as exc:  # a kaggle.json without username or key
        raise PneumoError(f"{exc}: {_KAGGLE_TOKEN_HELP}") from None
    if credentials is None:
        raise PneumoError(f"the kaggle source needs a Kaggle API token: {_KAGGLE_TOKEN_HELP}")
    if "output_dir" not in inspect.signature(kagglehub.dataset_download).parameters:
        raise PneumoError("this kagglehub is too old to download into a chosen folder: pip install -U kagglehub")
    target = folder / KAGGLE_HANDLE.rsplit("/", 1)[1]
    logger.info(f"downloading {KAGGLE_HANDLE} from Kaggle into {target}")
    try:
        path = Path(kagglehub.dataset_download(KAGGLE_HANDLE, output_dir=str(target)))
    except Exception as exc:  # the client's own errors (HTTP, network, token) become one line that says what to do
        raise PneumoError(
            f"the Kaggle download of {KAGGLE_HANDLE} failed ({exc}); check the network and the API token "
            f"({_KAGGLE_TOKEN_HELP}), or use the mendeley source"
        ) from None
    return path
