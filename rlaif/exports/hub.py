"""``rlaif export ... --push-to-hub REPO``: upload an export and its card to a Hugging Face Hub dataset repository.

The upload goes through ``huggingface_hub.HfApi`` (``create_repo``, then one ``upload_folder`` commit holding the
data files and README.md). rlaif runs offline by default (``HF_HUB_OFFLINE=1``, so nothing is ever downloaded); a
push needs the network, so it asks for ``HF_HUB_OFFLINE=0`` to be set on purpose, and a token
(``HF_TOKEN`` or ``hf auth login``).
"""

from __future__ import annotations

import os

from rlaif.errors import ConfigError
from rlaif.exports.formats import Export


def upload_patterns(export: Export) -> list[str]:
    """What the commit holds, relative to the export's folder: its data files and the card, nothing else there."""
    return [*export.data_files, "README.md"] + (["dataset_info.json", "state.json"] if export.kind == "disk" else [])


def push_to_hub(export: Export, repo_id: str, *, private: bool = False, token: str | None = None) -> str:
    """Create ``repo_id`` (a dataset repository) if needed and upload the export; returns the commit's URL."""
    if "/" not in repo_id.strip("/"):
        raise ConfigError(f"--push-to-hub: expected a repository as OWNER/NAME, got {repo_id!r}")
    from huggingface_hub import HfApi, constants

    if constants.HF_HUB_OFFLINE:
        raise ConfigError("--push-to-hub needs the network, and rlaif runs offline by default: set "
                          "HF_HUB_OFFLINE=0 for this command (the export itself is written)")
    api = HfApi(token=token or os.environ.get("HF_TOKEN"))
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    commit = api.upload_folder(repo_id=repo_id, repo_type="dataset", folder_path=str(export.folder),
                               allow_patterns=upload_patterns(export),
                               commit_message=f"rlaif export {export.dataset} --format {export.format}")
    return str(getattr(commit, "commit_url", commit))
