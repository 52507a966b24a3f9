"""The page end to end: the real app under uvicorn on a loopback port, driven by headless Chromium.

Uses Debian's system Chromium (/usr/bin/chromium) through Playwright; nothing is downloaded.
CI installs it (.ci/run), so there a missing browser is a failure; elsewhere the test skips.
"""

from __future__ import annotations

import base64
import importlib.util
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # drives a headless browser against a live server

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[2]


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must have it: .ci/run installs it)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def server() -> str:
    """The app with the bundled model, served by uvicorn in a thread on a free 127.0.0.1 port."""
    for module in ("fastapi", "uvicorn", "playwright", "httpx"):
        if importlib.util.find_spec(module) is None:
            _unavailable(f"{module} is not installed (pip install -e '.[dev]')")
    if not CHROMIUM.is_file():
        _unavailable(f"{CHROMIUM} not found: install Debian's chromium (apt-get install chromium)")
    import httpx
    import uvicorn

    from pneumo.service.app import create_app

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))  # loopback only; the port is held from here on, so nothing can take it
    port = sock.getsockname()[1]
    config = uvicorn.Config(create_app(), log_level="warning", lifespan="off")
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{base}/healthz", timeout=2).json().get("status") == "ok":
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or not thread.is_alive():
            uv.should_exit = True
            pytest.fail("the app did not answer /healthz within 30 s")
        time.sleep(0.1)
    yield base
    uv.should_exit = True
    thread.join(timeout=10)
    sock.close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield chromium
        chromium.close()


def _api_predict(base: str, path: Path) -> tuple[int, dict]:
    import httpx

    with path.open("rb") as f:
        response = httpx.post(f"{base}/v1/predict", files={"file": (path.name, f)}, timeout=60)
    return response.status_code, response.json()


def _drop_file(page, selector: str, path: Path, mime: str) -> None:
    """A real drop event on the zone, carrying the file in a DataTransfer, as a user's drag would."""
    payload = base64.b64encode(path.read_bytes()).decode("ascii")
    page.evaluate(
        """([selector, name, mime, payload]) => {
            const bytes = Uint8Array.from(atob(payload), c => c.charCodeAt(0));
            const data = new DataTransfer();
            data.items.add(new File([bytes], name, { type: mime }));
            const zone = document.querySelector(selector);
            zone.dispatchEvent(new DragEvent("dragover", { dataTransfer: data, bubbles: true, cancelable: true }));
            zone.dispatchEvent(new DragEvent("drop", { dataTransfer: data, bubbles: true, cancelable: true }));
        }""",
        [selector, path.name, mime, payload],
    )


def test_page_predicts_shows_heatmap_errors_and_warnings(server: str, browser, shared_data: Path, tmp_path: Path) -> None:
    train = shared_data / "chest_xray" / "train"  # as tests/conftest.py: ../shared/data from the project root
    xray = sorted((train / "PNEUMONIA").glob("*.jpeg"))[0]
    normal = sorted((train / "NORMAL").glob("*.jpeg"))[0]
    dicom = shared_data / "samples" / "dicom" / "not_a_chest_ot.dcm"
    assert dicom.is_file(), f"{dicom} not found"

    page = browser.new_page(viewport={"width": 1280, "height": 800})
    console_errors: list[str] = []
    page.on("pageerror", lambda exc: console_errors.append(str(exc)))
    page.goto(server + "/")

    # always there, before anything is uploaded
    assert page.is_visible("#disclaimer")
    assert "not a medical device" in page.inner_text("#disclaimer")
    assert page.is_hidden("#result")
    assert page.get_attribute("#file", "type") == "file"
    assert all(ext in page.get_attribute("#file", "accept") for ext in (".jpeg", ".jpg", ".png", ".dcm"))
    model = page.context.request.get(server + "/v1/model").json()
    page.wait_for_function("id => document.getElementById('model-info').textContent.includes(id)", arg=model["id"])
    assert "not calibrated to a site" in page.inner_text("#model-info")  # the bundled model as shipped (`pneumo calibrate` says otherwise)

    # a real training image through the file chooser: the page says what the API says
    page.set_input_files("#file", str(xray))
    page.wait_for_selector("#result:not([hidden])", timeout=30_000)
    status, answer = _api_predict(server, xray)
    assert status == 200
    label = page.inner_text("#label").strip()
    assert label in ("PNEUMONIA", "NORMAL")
    assert label == answer["label"]
    shown = float(page.inner_text("#probability"))
    assert 0.0 <= shown <= 1.0
    assert abs(shown - answer["probability"]) <= 0.006  # two decimals
    fill = page.eval_on_selector("#prob-fill", "e => parseFloat(e.style.width)")
    assert fill == pytest.approx(100 * answer["probability"], abs=0.01)
    marker = page.eval_on_selector("#threshold-marker", "e => parseFloat(e.style.left)")
    assert marker == pytest.approx(100 * answer["threshold"], abs=0.01)
    page.wait_for_function("document.getElementById('image').naturalWidth > 0")
    page.wait_for_function("document.getElementById('heatmap').naturalWidth > 0")
    size = page.eval_on_selector("#heatmap", "e => [e.naturalWidth, e.naturalHeight]")
    assert size == [model["image_size"], model["image_size"]]

    page.screenshot(path=str(tmp_path / "page-1280.png"), full_page=True)

    # the heatmap's controls
    assert page.is_visible("#heatmap")
    page.uncheck("#cam-toggle")
    assert page.is_hidden("#heatmap")
    page.check("#cam-toggle")
    assert page.is_visible("#heatmap")
    before = page.eval_on_selector("#heatmap", "e => e.style.opacity")
    page.fill("#opacity", "25")  # a range input takes fill() and fires "input"
    assert page.eval_on_selector("#heatmap", "e => e.style.opacity") == "0.25" != before

    # the same page on a narrow screen
    page.set_viewport_size({"width": 420, "height": 800})
    assert page.is_visible("#label") and page.is_visible("#image") and page.is_visible("#disclaimer")
    assert page.evaluate("document.documentElement.scrollWidth") <= 420  # no sideways scrolling
    page.screenshot(path=str(tmp_path / "page-420.png"), full_page=True)
    page.set_viewport_size({"width": 1280, "height": 800})

    # not an image: the API's own message in the error box, no stale result beside it
    bad = tmp_path / "not_an_image.jpeg"
    bad.write_text("this is a text file with a .jpeg name\n")
    status, error = _api_predict(server, bad)
    assert status == 400 and error["error"]
    page.set_input_files("#file", str(bad))
    page.wait_for_selector("#error:not([hidden])", timeout=30_000)
    assert error["error"] in page.inner_text("#error")
    assert page.is_hidden("#result")

    # a DICOM that is not a chest radiograph: no verdict badge, its warnings listed, the probability still shown
    page.set_input_files("#file", str(dicom))
    page.wait_for_selector("#result:not([hidden])", timeout=30_000)
    assert page.is_hidden("#error")
    items = page.locator("#warnings li")
    assert items.count() >= 1
    assert page.is_visible("#warnings")
    assert page.inner_text("#label").strip() == "no verdict: input outside what the model was trained on"
    assert "is-pneumonia" not in page.get_attribute("#label", "class") and "is-normal" not in page.get_attribute("#label", "class")
    assert 0.0 <= float(page.inner_text("#probability")) <= 1.0
    page.wait_for_function("document.getElementById('image').naturalWidth > 0")  # the server's rendering of the DICOM
    page.screenshot(path=str(tmp_path / "page-dicom.png"), full_page=True)

    # drag and drop onto the zone
    _drop_file(page, "#drop", normal, "image/jpeg")
    page.wait_for_function("name => document.getElementById('file-name').textContent === name", arg=normal.name, timeout=30_000)
    page.wait_for_selector("#result:not([hidden])", timeout=30_000)
    assert page.inner_text("#label").strip() in ("PNEUMONIA", "NORMAL")
    assert page.locator("#warnings li").count() == 0 or page.is_visible("#warnings")

    assert not console_errors, console_errors
    if os.environ.get("PNEUMO_UPDATE_SCREENSHOT"):  # refresh the README's picture: PNEUMO_UPDATE_SCREENSHOT=1 pytest tests/e2e/test_page.py
        shutil.copy(tmp_path / "page-1280.png", ROOT / "docs" / "page-screenshot.png")


def test_docs_upload_a_film_with_no_other_host(server: str, browser, shared_data: Path) -> None:
    """/docs, Swagger UI served by the app, as offline: a request for any other host is refused and
    recorded; "Try it out" on POST /v1/predict uploads a real film and shows the answer."""
    film = sorted((shared_data / "chest_xray" / "train" / "PNEUMONIA").glob("*.jpeg"))[0]
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    elsewhere: list[str] = []
    page.on("pageerror", lambda exc: elsewhere.append(f"page error: {exc}"))

    def outside(route) -> None:
        elsewhere.append(route.request.url)
        route.abort()

    page.route(lambda url: not url.startswith(server + "/"), outside)
    page.goto(server + "/docs", wait_until="load")
    assert not elsewhere, elsewhere
    operation = "#operations-default-predict_v1_predict_post"
    page.click(f"{operation} .opblock-summary", timeout=30_000)
    page.click(f"{operation} button.try-out__btn")
    page.set_input_files(f"{operation} input[type=file]", str(film))
    page.click(f"{operation} button.execute")
    status = page.wait_for_selector(f"{operation} .live-responses-table tbody .response-col_status", timeout=30_000)
    assert status.inner_text().strip() == "200"
    assert f'"filename": "{film.name}"' in page.inner_text(f"{operation} .live-responses-table tbody .response-col_description")
    assert not elsewhere, elsewhere
