"""Downloads of weights files: from the Hugging Face hub into its cache, or from a URL to a file,
never leaving a half-written or (with a sha256) wrong file where it is looked for.

The backbones (trainables/backbones/hub.py) and the initializations (trainables/initializations/)
both download; this module is what they share, so that neither package imports the other for it.
"""

import hashlib
import os
import tempfile
from pathlib import Path

import torch

from trainables.missing_weights import MissingWeightsError
from trainables.redaction import redact_uri


def download_from_hub(repo_id: str, file_names: tuple[str, ...], what: str) -> Path:
    """The first of `file_names` the hub repo has, downloaded into the Hugging Face hub cache
    (HF_ENDPOINT is honoured); MissingWeightsError naming the repo when none can be had."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    for file_name in file_names:
        try:
            return Path(hf_hub_download(repo_id, file_name))
        except LocalEntryNotFoundError:  # the hub did not answer: the other names will not fare better
            raise MissingWeightsError(f"{what}: the hub did not answer for {repo_id}/{file_name}; check the "
                                      "network, or give the file (weights_dir or weights_path)") from None
        except EntryNotFoundError:
            continue
        except Exception as error:  # no network, an unknown repo, a gated one: the same to the user
            raise MissingWeightsError(f"{what}: the download of {file_name} from the hub repo {repo_id} "
                                      f"failed ({type(error).__name__})") from None
    raise MissingWeightsError(f"{what}: the hub repo {repo_id} has none of {', '.join(file_names)}")


def download_url(url: str, target: Path, what: str, sha256: str | None = None) -> Path:
    """`url` downloaded to `target` through a temporary file beside it, so that no half file (nor,
    with `sha256`, a wrong one) is ever left where it is looked for."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as folder:
        partial = Path(folder) / target.name
        try:
            torch.hub.download_url_to_file(url, str(partial), progress=False)
        except Exception as error:  # no network, a wrong address: the same to the user
            raise MissingWeightsError(f"{what} could not be downloaded from {redact_uri(url)} "
                                      f"({type(error).__name__})") from None
        store_download(partial, target, sha256, url)
    return target


def store_download(partial: Path, target: Path, sha256: str | None, url: str) -> None:
    """Move a finished download to `target`, after checking it against `sha256` when given: a
    wrong file never sits where it is looked for."""
    if sha256:
        check_sha256(partial, sha256, url)
    os.replace(partial, target)


class WeightsDigestError(MissingWeightsError):
    """A weights file whose sha256 is not the one weights_sha256 names."""


def check_sha256(path: Path, sha256: str, location: str) -> None:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    if digest.hexdigest() != sha256.lower():
        raise WeightsDigestError(
            f"weights_path {redact_uri(location)} has sha256 {digest.hexdigest()}, not weights_sha256 "
            f"{sha256.lower()}: refused; check the file (or the URL), or fix weights_sha256"
        )
