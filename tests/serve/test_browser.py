"""End to end in a browser: Playwright drives headless Debian Chromium against
`vipet serve` on loopback — upload a study, write its report, click a finding (the
views jump to it and show its attention), ask a question, save a screenshot.

Needs /usr/bin/chromium (Debian's chromium package; scripts/setup.sh installs it) and
the playwright package (dev extra; its own browser download is never used)."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
import torch
import uvicorn
from playwright import sync_api

from tests.helpers import small_study
from tests.inference.test_bundle import CHEST
from vipet.data.tokenizer import synthetic_corpus, train_tokenizer
from vipet.inference.predictor import Predictor
from vipet.io.nifti import write_nifti_volume
from vipet.model.presets import build_model
from vipet.serve.app import ServeSettings, create_app

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# The machine's network is closed: without the background-networking flags Chromium
# keeps opening refused connections (see the machine notes).
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium not installed")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _scripted_predictor() -> Predictor:
    """A tiny model whose chest 'report' is a fixed text with two lesions, so the page
    has findings to click (the service and the page are what is tested here)."""
    torch.manual_seed(0)
    tok = train_tokenizer(synthetic_corpus(10, 0), vocab_size=500)
    p = Predictor(build_model("tiny", tok, slot_threshold=0.05), tok)
    chest = tok.encode(CHEST, add_special_tokens=False)
    other = tok.encode("Đầu - cổ: Không phát hiện bất thường.", add_special_tokens=False)
    chest_id = tok.convert_tokens_to_ids("<region:chest>")
    real = p.model.generate

    def generate(input_ids, visual=None, **kw):
        if kw.get("max_new_tokens", 0) > 64:  # a report
            ids = chest if chest_id in input_ids[0].tolist() else other
            return torch.tensor([[*ids, p.stop[0]]])
        return real(input_ids, visual=visual, **kw)

    p.model.generate = generate
    return p


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    app = create_app(predictor=_scripted_predictor(), settings=ServeSettings(report_tokens=200))
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    for _ in range(200):
        if srv.started:
            break
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=10)


def test_upload_report_click_finding_ask_and_screenshot(server, tmp_path) -> None:
    study = small_study()
    ct, pet = tmp_path / "ct.nii.gz", tmp_path / "pet.nii.gz"
    write_nifti_volume(study.ct, ct)
    write_nifti_volume(study.pet, pet)
    shot = tmp_path / "viewer.png"
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 950})
            page.goto(server)
            page.set_input_files("#files", [str(ct), str(pet)])
            page.click("#upload")
            page.wait_for_selector("#main:not([hidden])", timeout=60_000)
            page.wait_for_function("document.querySelector('.view img').naturalWidth > 0")
            page.select_option("#lang", "vi")
            page.click("#report-btn")
            page.wait_for_selector("#findings li", timeout=120_000)
            assert "Lồng ngực" in page.inner_text("#report-text")
            items = page.query_selector_all("#findings li")
            assert len(items) == 2
            assert all(
                any(
                    c in (i.get_attribute("class") or "")
                    for c in ("supported", "differs", "unsupported")
                )
                for i in items
            )
            items[0].click()
            page.wait_for_function(
                "document.querySelector('.view[data-axis=axial] img').src.includes('finding=1')"
            )
            assert "selected" in (items[0].get_attribute("class") or "")
            page.wait_for_function("document.querySelector('.view img').complete")
            page.fill("#question", "Có hạch ở lồng ngực không?")
            page.click("#ask")
            page.wait_for_selector("#answers li", timeout=60_000)
            assert "Có hạch" in page.inner_text("#answers")
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
