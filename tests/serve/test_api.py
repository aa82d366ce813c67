"""`vipet serve`'s API (FastAPI TestClient): uploads and their refusals, slices, the
report with the guard's marks, questions, expiry, concurrency and the timeout."""

from __future__ import annotations

import io
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from fastapi.testclient import TestClient

from tests.helpers import small_study
from tests.test_cli import ACQ
from vipet.data.tokenizer import synthetic_corpus, train_tokenizer
from vipet.inference.predictor import Predictor
from vipet.io.dicom_writer import write_dicom_study
from vipet.io.nifti import write_nifti_volume
from vipet.model.presets import build_model
from vipet.serve.app import ServeSettings, create_app
from vipet.serve.store import StudyStore

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    torch.manual_seed(0)
    tok = train_tokenizer(synthetic_corpus(10, 0), vocab_size=500)
    return Predictor(build_model("tiny", tok, slot_threshold=0.05), tok)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, bytes]:
    base = tmp_path_factory.mktemp("uploads")
    study = small_study()
    write_nifti_volume(study.ct, base / "ct.nii.gz")
    write_nifti_volume(study.pet, base / "pet_suv.nii.gz")
    dicom = base / "dicom"
    write_dicom_study(study, dicom, pet_acquisition=ACQ)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for p in sorted(dicom.rglob("*")):
            if p.is_file():
                z.write(p, p.relative_to(dicom).as_posix())
    ct_only = io.BytesIO()
    with zipfile.ZipFile(ct_only, "w") as z:
        for p in sorted(dicom.rglob("*")):
            if p.is_file() and p.parent.name == "CT":
                z.write(p, p.relative_to(dicom).as_posix())
    return {
        "ct": (base / "ct.nii.gz").read_bytes(),
        "pet": (base / "pet_suv.nii.gz").read_bytes(),
        "dicom_zip": buf.getvalue(),
        "ct_only_zip": ct_only.getvalue(),
        "dicom_one": next(p for p in sorted(dicom.rglob("*")) if p.is_file()).read_bytes(),
    }


def client(predictor, **settings) -> TestClient:
    s = ServeSettings(report_tokens=24, **settings)
    return TestClient(create_app(predictor=predictor, settings=s))


def upload(c: TestClient, *parts: tuple[str, bytes]):
    return c.post("/api/studies", files=[("files", (name, data)) for name, data in parts])


def test_nifti_study_slices_report_question_and_delete(predictor, files) -> None:
    c = client(predictor)
    r = upload(c, ("pet_suv.nii.gz", files["pet"]), ("ct.nii.gz", files["ct"]))  # any order
    assert r.status_code == 200, r.text
    sid = r.json()["id"]
    assert len(sid) == 16 and r.json()["layout"] == "nifti-pair"
    info = c.get(f"/api/studies/{sid}").json()
    assert set(info["shape"]) == {"axial", "coronal", "sagittal"} and info["suv_max"] > 0
    for axis, n in info["shape"].items():
        r = c.get(f"/api/studies/{sid}/slice/{axis}/{n // 2}.png?window=lung&pet=0.3")
        assert r.status_code == 200 and r.content[:8] == PNG
    assert c.get(f"/api/studies/{sid}/slice/axial/0.png?window=40,400").status_code == 200
    assert c.get(f"/api/studies/{sid}/slice/axial/99999.png").status_code == 400
    assert c.get(f"/api/studies/{sid}/slice/oblique/1.png").status_code == 400
    assert c.get(f"/api/studies/{sid}/slice/axial/1.png?window=nope").status_code == 400
    assert c.get(f"/api/studies/{sid}/mip.png").content[:8] == PNG

    rep = c.post(f"/api/studies/{sid}/report?lang=en")
    assert rep.status_code == 200, rep.text
    data = rep.json()
    assert data["study_id"] == sid and data["text"].startswith("Findings:")
    assert {"supported", "differs", "unsupported", "omitted"} <= set(data["guard"])
    for f in data["findings"]:
        assert f["guard"]["status"] in ("supported", "differs", "unsupported")
        if f["attention"]["map"]:
            r = c.get(
                f"/api/studies/{sid}/slice/axial/{f['display_voxel'][0]}.png?finding={f['id']}"
            )
            assert r.status_code == 200
    assert c.get(f"/api/studies/{sid}/slice/axial/1.png?finding=999").status_code == 404

    a = c.post(
        f"/api/studies/{sid}/ask", json={"question": "Is this PET/CT study normal?", "lang": "en"}
    )
    assert a.status_code == 200 and isinstance(a.json()["answer"], str)
    bad = c.post(f"/api/studies/{sid}/ask", json={"question": "?", "region": "knee"})
    assert bad.status_code == 400
    assert c.post(f"/api/studies/{sid}/ask", json={"question": ""}).status_code == 422

    assert c.delete(f"/api/studies/{sid}").json() == {"deleted": True}
    assert c.get(f"/api/studies/{sid}").status_code == 404


def test_dicom_zip_is_read(predictor, files) -> None:
    r = upload(client(predictor), ("study.zip", files["dicom_zip"]))
    assert r.status_code == 200, r.text
    assert r.json()["layout"] == "dicom"


def _zip(members: dict[str, bytes], symlink: str | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = 0o120777 << 16
            z.writestr(info, "/etc/passwd")
    return buf.getvalue()


@pytest.mark.parametrize(
    ("kind", "status", "needle"),
    [
        ("not_a_zip", 400, "not a zip"),
        ("zip_slip", 400, "climbs out"),
        ("absolute", 400, "absolute"),
        ("symlink", 400, "not a plain file"),
        ("not_dicom", 400, "not a DICOM"),
        ("ct_without_pet", 400, "cannot read the study"),
        ("one_nifti", 400, "two files"),
        ("wrong_type", 400, ".zip of DICOM"),
        ("oversized", 413, "cap"),
        ("nothing", 422, ""),
    ],
)
def test_bad_uploads_are_refused_and_leave_nothing(
    predictor, files, tmp_path, kind, status, needle
) -> None:
    store = StudyStore(root=tmp_path / "store")
    settings = ServeSettings(max_upload_bytes=200_000 if kind == "oversized" else 512 * 1024**2)
    c = TestClient(create_app(predictor=predictor, settings=settings, store=store))
    dcm = files["dicom_one"]
    parts = {
        "not_a_zip": [("study.zip", b"this is not a zip")],
        "zip_slip": [("study.zip", _zip({"ok.dcm": dcm, "../../evil.dcm": dcm}))],
        "absolute": [("study.zip", _zip({"/etc/evil.dcm": dcm}))],
        "symlink": [("study.zip", _zip({"a.dcm": dcm}, symlink="link.dcm"))],
        "not_dicom": [("study.zip", _zip({"notes.txt": b"hello" * 100}))],
        "ct_without_pet": [("study.zip", files["ct_only_zip"])],
        "one_nifti": [("ct.nii.gz", files["ct"])],
        "wrong_type": [("study.txt", b"hello")],
        "oversized": [("ct.nii.gz", files["ct"]), ("pet.nii.gz", files["pet"] * 4)],
        "nothing": [],
    }[kind]
    r = (
        c.post("/api/studies", files=[("files", p) for p in parts])
        if parts
        else c.post("/api/studies")
    )
    assert r.status_code == status, r.text
    assert needle in r.text
    assert list((tmp_path / "store").iterdir()) == []  # nothing kept, nothing written outside
    assert not (tmp_path / "evil.dcm").exists()


def test_studies_expire(predictor, files, tmp_path) -> None:
    store = StudyStore(root=tmp_path / "store", ttl_s=0.05)
    c = TestClient(create_app(predictor=predictor, store=store))
    sid = upload(c, ("ct.nii.gz", files["ct"]), ("pet.nii.gz", files["pet"])).json()["id"]
    time.sleep(0.1)
    assert c.get(f"/api/studies/{sid}").status_code == 404
    assert list((tmp_path / "store").iterdir()) == []


def test_concurrent_questions_share_one_model(predictor, files) -> None:
    c = client(predictor)
    sid = upload(c, ("ct.nii.gz", files["ct"]), ("pet.nii.gz", files["pet"])).json()["id"]
    q = {"question": "Is there a lymph node in the chest?", "lang": "en", "region": "chest"}
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: c.post(f"/api/studies/{sid}/ask", json=q), range(8)))
    assert [a.status_code for a in answers] == [200] * 8
    assert len({a.json()["answer"] for a in answers}) == 1  # greedy: the same answer


def test_a_slow_model_call_times_out(predictor, files) -> None:
    class Slow:
        model, tokenizer = predictor.model, predictor.tokenizer

        def encode(self, study, with_attention=False):
            return predictor.encode(study, with_attention)

        def ask(self, *a, **k):
            time.sleep(1.0)
            return "late"

    c = TestClient(create_app(predictor=Slow(), settings=ServeSettings(request_timeout_s=0.2)))
    sid = upload(c, ("ct.nii.gz", files["ct"]), ("pet.nii.gz", files["pet"])).json()["id"]
    r = c.post(f"/api/studies/{sid}/ask", json={"question": "Is it normal?"})
    assert r.status_code == 504 and "longer than" in r.text


def test_viewer_and_openapi_are_served(predictor) -> None:
    c = client(predictor)
    page = c.get("/")
    assert page.status_code == 200 and "ViPET viewer" in page.text
    assert "cdn" not in page.text.lower() and "https://" not in page.text
    assert c.get("/static/viewer.js").status_code == 200
    paths = c.get("/openapi.json").json()["paths"]
    assert "/api/studies" in paths and "/api/studies/{sid}/report" in paths
