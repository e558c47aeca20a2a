"""JupyterLab on this repository (`make lab`) without diffs in the committed notebooks.

Opening a notebook in Lab connects a kernel, which rewrites the notebook's kernelspec display name
and fills language_info with the kernel's details (Python version included); Lab's autosave then
writes them into the tracked file. `make lab` installs `keep_committed_metadata` as the server's
pre-save hook, so a notebook is saved with the metadata the repository commits: opening one
changes nothing, and only what a person edits (cells, outputs) shows in `git status`.
"""

from __future__ import annotations

# The notebook-level metadata of every committed notebook (tests/test_notebooks.py checks them).
NOTEBOOK_METADATA = {
    "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
    "language_info": {"name": "python"},
}


def keep_committed_metadata(model: dict, **_) -> None:
    """Jupyter server pre-save hook: give a Python notebook the committed notebook metadata
    (other metadata keys, cells and outputs are saved as they are)."""
    if model.get("type") != "notebook":
        return
    metadata = model["content"]["metadata"]
    if metadata.get("kernelspec", {}).get("name") == NOTEBOOK_METADATA["kernelspec"]["name"]:
        metadata.update({key: dict(value) for key, value in NOTEBOOK_METADATA.items()})
