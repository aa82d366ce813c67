"""Screenshot of the browser viewer on a real model and study (docs/images/viewer.png).

Starts `vipet serve`'s app around ``--checkpoint`` on loopback, uploads one study of a
ViPET dataset as a NIfTI pair, writes its report, clicks its first finding, asks a
question and saves the page — the flow of tests/serve/test_browser.py, with a trained
model. Needs Debian's chromium and the playwright package.

    .venv/bin/python scripts/viewer_screenshot.py --checkpoint runs/cpu-small/model \\
        --data /tmp/ph600 --study phantom_00009 --out docs/images/viewer.png
"""

from __future__ import annotations

import argparse
import socket
import tempfile
import threading
import time
from pathlib import Path

FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, required=True)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--study", required=True)
    ap.add_argument("--question", default="Kết quả PET/CT có bình thường không?")
    ap.add_argument("--out", type=Path, default=Path("docs/images/viewer.png"))
    args = ap.parse_args()

    import uvicorn
    from playwright.sync_api import sync_playwright

    from vipet.io import LoadOptions, load_study
    from vipet.io.nifti import write_nifti_volume
    from vipet.serve.app import create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(args.checkpoint), host="127.0.0.1", port=port, log_level="error")
    )
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    study = load_study(args.data, LoadOptions(study_id=args.study))
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        ct, pet = Path(tmp) / "ct.nii.gz", Path(tmp) / "pet.nii.gz"
        write_nifti_volume(study.ct, ct)
        write_nifti_volume(study.pet, pet)
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=FLAGS)
        page = browser.new_page(viewport={"width": 1500, "height": 1000})
        page.goto(f"http://127.0.0.1:{port}/")
        page.set_input_files("#files", [str(ct), str(pet)])
        page.click("#upload")
        page.wait_for_selector("#main:not([hidden])", timeout=120_000)
        page.click("#report-btn")
        page.wait_for_selector("#findings li", timeout=300_000)
        page.click("#findings li >> nth=0")
        page.wait_for_timeout(1500)
        page.fill("#question", args.question)
        page.click("#ask")
        page.wait_for_selector("#answers li", timeout=120_000)
        page.wait_for_timeout(1000)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(args.out), full_page=True)
        browser.close()
    server.should_exit = True
    print(f"screenshot: {args.out}")


if __name__ == "__main__":
    main()
