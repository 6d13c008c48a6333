"""Try a published checkpoint in the browser: a Gradio Space app and an Inference Endpoints handler.

    write_space(folder, "org/igpt-s")   # app.py, handler.py, requirements.txt, README.md (sdk: gradio), space.json
    write_handler(folder)               # handler.py, for a model repository folder (Inference Endpoints)

The app (`app.py`, beside this file) runs on any checkpoint folder or repo id:
`python -m hub_cards.space.app --model PATH_OR_REPO` from the checkout's root. In a Space it reads the model from the
`IGPT_MODEL` variable, or from `space.json`, which `write_space` writes. It drives the checkpoint through
`hub_cards/handler.py`'s `EndpointHandler`, the class Inference Endpoints runs, so both deployables load, check and run
a checkpoint the same way.
"""

import json
import shutil
from pathlib import Path

from huggingface_hub import SpaceCard, SpaceCardData


SPACE = Path(__file__).parent
HANDLER = SPACE.parent / "handler.py"
SDK_VERSION = "6.31.0"  # the Gradio the app is tested with (pyproject's dev extras)


def write_handler(folder: str | Path) -> Path:
    """Copy the Inference Endpoints handler into a model repository folder; returns its path there."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} has no config.json: write the handler into a saved checkpoint folder")
    return Path(shutil.copy(HANDLER, folder / "handler.py"))


def write_space(
    folder: str | Path, model_id: str, revision: str | None = None, title: str | None = None,
    license: str = "apache-2.0",
) -> Path:
    """Write a Gradio Space that demos `model_id` (a Hub repo id) into `folder`; returns the folder.

    `revision` pins the model commit the Space loads (it runs the model repository's code, trust_remote_code=True).
    The Space card's metadata links the model (`models:`), so the model page lists the Space.
    """
    folder = Path(folder)
    if "/" not in model_id:
        raise ValueError(f"model_id must be a Hub repo id ORG/NAME, got {model_id!r}")
    if folder.exists() and any(folder.iterdir()):
        raise FileExistsError(f"{folder} is not empty: pass a new folder")
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("app.py", "requirements.txt"):
        shutil.copy(SPACE / name, folder / name)
    shutil.copy(HANDLER, folder / "handler.py")
    (folder / "space.json").write_text(json.dumps({"model": model_id, "revision": revision}, indent=2) + "\n")

    card = SpaceCard.load(SPACE / "README.md")
    name = model_id.split("/")[-1]
    card.data = SpaceCardData(
        title=title or f"{name} (Image GPT)", sdk="gradio", sdk_version=SDK_VERSION, app_file="app.py",
        license=license, models=[model_id], tags=["image-gpt", "igpt"],
        emoji="🖼️", colorFrom="indigo", colorTo="gray", pinned=False,
        short_description=f"Sample, complete and classify images with {name}"[:60],
    )
    pinned = f" at revision `{revision}`" if revision else ""
    card.text = f"Demo of [{model_id}](https://huggingface.co/{model_id}){pinned}.\n" + card.text
    card.save(folder / "README.md")
    return folder
