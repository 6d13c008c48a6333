"""The Space app in a real browser: headless Debian Chromium, driven through selenium, against the app serving tiny
checkpoints built here (no Hub). It samples, uploads a photo and completes it, classifies, finds neighbours, shows the
message for an upload that is not an image, and saves a screenshot of each tab (to $IGPT_SCREENSHOTS_DIR, e.g. docs/images, when set).

Needs /usr/bin/chromium and /usr/bin/chromedriver (`apt-get install -y chromium chromium-driver`; `.ci/run` installs
them); without them the browser tests skip, saying so. The callbacks' bad-input checks are also tested without a browser.
"""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import uvicorn
from fastapi import FastAPI
from PIL import Image
from sklearn.cluster import KMeans
from sklearn.datasets import load_sample_images

from hub_cards.handler import EndpointHandler
from hub_cards.space import app, write_space
from image_processing import IGPTImageProcessor
from modeling_igpt import IGPTForCausalImageModeling, IGPTForImageClassification
from modeling_igpt.pipeline_igpt import IGPTImageGenerationPipeline


CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
SIZE, COLOURS = 12, 16  # 144 pixels: sampled without compiling the decode step
# Screenshots go to a temporary folder; IGPT_SCREENSHOTS_DIR=docs/images refreshes the docs' pictures on purpose
# (a plain test run must not rewrite tracked files).
SCREENSHOTS = Path(os.environ.get("IGPT_SCREENSHOTS_DIR") or tempfile.mkdtemp(prefix="igpt-space-screenshots-"))
TIMEOUT = 30  # seconds for anything the page waits on
browser = pytest.mark.skipif(
    not (Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()),
    reason=f"headless Chromium not installed ({CHROMIUM}, {CHROMEDRIVER}): apt-get install -y chromium chromium-driver",
)


def photo_palette_processor() -> IGPTImageProcessor:
    """A 16-colour palette fitted to the example photos, so that the screenshots show recognisable pictures."""
    pixels = np.concatenate([photo[::16, ::16].reshape(-1, 3) for photo in load_sample_images().images])
    clusters = KMeans(COLOURS, n_init=1, random_state=0).fit(pixels / 127.5 - 1).cluster_centers_
    return IGPTImageProcessor(clusters=clusters, size={"height": SIZE, "width": SIZE})


@pytest.fixture(scope="module")
def handlers(tmp_path_factory, tiny_model, random_model):
    """EndpointHandlers for a generative and a classifier checkpoint saved the way publish.py saves them."""
    root, processor = tmp_path_factory.mktemp("space"), photo_palette_processor()
    sizes = dict(vocab_size=COLOURS + 1, max_position_embeddings=SIZE * SIZE)
    generative = random_model(tiny_model(IGPTForCausalImageModeling, **sizes))
    IGPTImageGenerationPipeline(model=generative, image_processor=processor, device=-1).save_pretrained(root / "gen")
    labels = {index: name for index, name in enumerate(["bird", "cat", "deer", "dog", "frog", "horse", "ship"])}
    classifier = random_model(
        tiny_model(IGPTForImageClassification, **sizes, id2label=labels, label2id={v: k for k, v in labels.items()})
    )
    classifier.save_pretrained(root / "clf")
    processor.save_pretrained(root / "clf")
    return {"generative": EndpointHandler(str(root / "gen")), "classifier": EndpointHandler(str(root / "clf"))}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def urls(handlers):
    """Both apps served on localhost by uvicorn, mounted as gradio documents (`gr.mount_gradio_app`): {kind: url}.

    Not `demo.launch()`: it gives up when its own first request to the page takes over 3 s, as on a loaded machine."""
    servers, served = [], {}
    for kind, handler in handlers.items():
        port = free_port()
        application = gr.mount_gradio_app(FastAPI(), app.build_demo(handler, name=f"tiny-{kind}"), path="/")
        server = uvicorn.Server(uvicorn.Config(application, host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        servers.append((server, thread))
        served[kind] = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + TIMEOUT
    while not all(server.started for server, _ in servers):
        assert time.monotonic() < deadline, f"the apps did not start within {TIMEOUT} s"
        time.sleep(0.1)
    yield served
    for server, thread in servers:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def driver():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000"):
        options.add_argument(argument)
    chrome = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)  # the system driver: nothing downloaded
    yield chrome
    chrome.quit()


# --- Driving the page -------------------------------------------------------------------------------------------------


def wait_for(driver, condition, what: str):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, TIMEOUT).until(lambda _: condition(), message=f"waited {TIMEOUT} s for {what}")


def click_when_ready(driver, find, what: str):
    """Click the element `find()` returns once the page lets it (gradio covers components while it loads)."""
    from selenium.common.exceptions import ElementClickInterceptedException, NoSuchElementException

    def clicked() -> bool:
        try:
            find().click()
        except (ElementClickInterceptedException, NoSuchElementException, IndexError):
            return False
        return True

    wait_for(driver, clicked, what)


def open_tab(driver, title: str):
    from selenium.webdriver.common.by import By

    tabs = lambda: [tab for tab in driver.find_elements(By.CSS_SELECTOR, "button[role=tab]") if tab.text == title]  # noqa: E731
    click_when_ready(driver, lambda: tabs()[0], f"the {title!r} tab")


def upload(driver, prefix: str, path: Path):
    """Send a file to the tab's photo field and wait for its preview."""
    from selenium.webdriver.common.by import By

    field = wait_for(driver, lambda: driver.find_elements(By.CSS_SELECTOR, f"#{prefix}_photo input[type=file]"),
                     f"the file field of #{prefix}_photo")[0]
    field.send_keys(str(path))
    wait_for(driver, lambda: gallery_images(driver, f"{prefix}_preview"), f"the preview #{prefix}_preview")


def gallery_images(driver, elem_id: str) -> list:
    from selenium.webdriver.common.by import By

    return [image for image in driver.find_elements(By.CSS_SELECTOR, f"#{elem_id} img")
            if image.get_attribute("naturalWidth") not in (None, "0")]


def click(driver, elem_id: str):
    from selenium.webdriver.common.by import By

    click_when_ready(driver, lambda: driver.find_element(By.ID, elem_id), f"#{elem_id}")


def screenshot(driver, name: str):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    driver.execute_script("window.scrollTo(0, 0)")
    driver.save_screenshot(str(SCREENSHOTS / f"space_{name}.png"))


@pytest.fixture(scope="module")
def photo_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("uploads") / "flower.jpg"
    Image.fromarray(load_sample_images().images[1]).save(path)
    return path


@browser
def test_samples_tab_shows_the_requested_images(driver, urls):
    driver.get(urls["generative"])
    open_tab(driver, "Samples")
    from selenium.webdriver.common.by import By

    click_when_ready(driver, lambda: driver.find_element(By.XPATH, "//button[text()='Sample']"), "the Sample button")
    wait_for(driver, lambda: len(gallery_images(driver, "samples")) == 8, "8 samples")
    screenshot(driver, "samples")


@browser
def test_completion_of_an_uploaded_photo_shows_original_prompt_and_completions(driver, urls, photo_file):
    driver.get(urls["generative"])
    open_tab(driver, "Complete a photo")
    upload(driver, "complete", photo_file)
    click(driver, "complete_button")
    wait_for(driver, lambda: len(gallery_images(driver, "completions")) == 2 + 4, "original, prompt and 4 completions")
    screenshot(driver, "complete")


@browser
def test_an_upload_that_is_not_an_image_gets_a_message(driver, urls, tmp_path):
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("these are notes, not a picture")
    driver.get(urls["generative"])
    open_tab(driver, "Nearest neighbours")
    from selenium.webdriver.common.by import By

    field = wait_for(driver, lambda: driver.find_elements(By.CSS_SELECTOR, "#neighbours_photo input[type=file]"),
                     "the file field")[0]
    field.send_keys(str(not_an_image))  # the message comes on arrival, before any button is pressed
    wait_for(driver, lambda: "are not an image file PIL can read" in driver.page_source, "the error message")
    assert "Traceback" not in driver.page_source


@browser
def test_neighbours_tab_shows_five_tiles(driver, urls, photo_file):
    driver.get(urls["generative"])
    open_tab(driver, "Nearest neighbours")
    upload(driver, "neighbours", photo_file)
    click(driver, "neighbours_button")
    wait_for(driver, lambda: len(gallery_images(driver, "neighbours")) == 5, "5 neighbours")
    screenshot(driver, "neighbours")


@browser
def test_classifier_tab_shows_five_labels(driver, urls, photo_file, handlers):
    driver.get(urls["classifier"])
    open_tab(driver, "Classify")
    upload(driver, "classify", photo_file)
    click(driver, "classify_button")
    expected = [entry["label"] for entry in handlers["classifier"].classify(Image.open(photo_file), top_k=5)]
    wait_for(driver, lambda: all(label in driver.find_element("id", "labels").text for label in expected), "5 labels")
    screenshot(driver, "classify")


# --- The callbacks without a browser ------------------------------------------------------------------------------------


def test_callbacks_refuse_bad_uploads_with_a_message(handlers, tmp_path, photo_file):
    demo = app.Demo(handlers["generative"], "tiny")
    huge = tmp_path / "huge.png"
    Image.new("1", (8000, 7000)).save(huge)
    with pytest.raises(gr.Error, match=r"8000 x 7000 = 56.0 M pixels; the limit is 50 M"):
        app.shows_errors(demo.neighbours)(str(huge), 1)
    with pytest.raises(gr.Error, match="Upload a photo or pick an example first"):
        app.shows_errors(demo.complete)(None, 6, 2, 1.0, 0, 0)
    with pytest.raises(gr.Error, match=r"rows to keep must lie in \[0, 11\]"):
        app.shows_errors(demo.complete)(str(photo_file), 12, 2, 1.0, 0, 0)
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("notes")
    with pytest.raises(gr.Error, match="not an image file"):
        app.shows_errors(demo.neighbours)(str(not_an_image), 1)


def test_grayscale_and_rgba_photos_are_completed_as_rgb_with_progress_by_row(handlers, tmp_path, photo_file):
    demo = app.Demo(handlers["generative"], "tiny")
    for mode in ("L", "RGBA"):
        path = tmp_path / f"photo_{mode}.png"
        Image.open(photo_file).convert(mode).save(path)
        progress = []
        shown = demo.complete(str(path), 6, 2, 1.0, 0, 0, progress=lambda fraction, desc: progress.append(fraction))
        assert len(shown) == 4 and all(image.mode == "RGB" for image, _ in shown)
        assert progress == [row / 6 for row in range(1, 7)]  # 6 rows of 12 pixels sampled, one update per row


def test_write_space_writes_a_gradio_space_for_the_model(tmp_path):
    from huggingface_hub import SpaceCard

    folder = write_space(tmp_path / "space", "org/igpt-s", revision="abc123")
    assert {path.name for path in folder.iterdir()} == {"app.py", "handler.py", "requirements.txt", "README.md",
                                                        "space.json"}
    card = SpaceCard.load(folder / "README.md")
    assert card.data.sdk == "gradio" and card.data.app_file == "app.py" and card.data.models == ["org/igpt-s"]
    assert "revision `abc123`" in card.text
    with pytest.raises(FileExistsError):
        write_space(folder, "org/igpt-s")
    with pytest.raises(ValueError, match="ORG/NAME"):
        write_space(tmp_path / "other", "igpt-s")


@pytest.mark.parametrize("where", ["space", "checkout"])
def test_the_app_starts_without_sys_path_edits(tmp_path, where):
    """A Space runs `python app.py` with handler.py beside it; the checkout runs `python -m hub_cards.space.app`. Both
    reach the command line (`--help`, which names the model's sources)."""
    if where == "space":
        command, folder = [sys.executable, "app.py", "--help"], write_space(tmp_path / "space", "org/igpt-s")
    else:
        command, folder = [sys.executable, "-m", "hub_cards.space.app", "--help"], Path(__file__).resolve().parents[1]
    result = subprocess.run(command, capture_output=True, text=True, cwd=folder, env={**os.environ, "IGPT_MODEL": ""})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "--model" in result.stdout and "space.json" in result.stdout


def test_the_app_copied_without_its_handler_says_how_to_run_it(tmp_path):
    shutil.copy(Path(app.__file__), tmp_path / "app.py")
    result = subprocess.run([sys.executable, "app.py", "--help"], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode != 0 and "python -m hub_cards.space.app" in result.stderr
