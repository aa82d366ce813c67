// ViPET viewer: slices come from the server as PNG (window/level, PET overlay and the
// selected finding's attention drawn there), so the page holds no volume in memory.
"use strict";

const state = { id: null, info: null, index: {}, finding: null, history: [], report: null };
const $ = (sel) => document.querySelector(sel);
const views = () => Array.from(document.querySelectorAll(".view"));

function setStatus(text, error = false) {
  const s = $("#status");
  s.textContent = text;
  s.classList.toggle("error", error);
}

async function api(path, options = {}) {
  const res = await fetch(path, options);
  if (!res.ok) {
    let detail = res.statusText;
    try { detail = (await res.json()).detail || detail; } catch (e) { /* not JSON */ }
    throw new Error(typeof detail === "string" ? detail : JSON.stringify(detail));
  }
  return res.json();
}

function sliceUrl(axis) {
  const p = new URLSearchParams({
    window: $("#window").value, pet: $("#opacity").value, suv_max: $("#suvmax").value,
  });
  if (state.finding !== null && $("#show-attention").checked) p.set("finding", state.finding);
  return `/api/studies/${state.id}/slice/${axis}/${state.index[axis]}.png?${p}`;
}

function draw(axis) {
  const fig = document.querySelector(`.view[data-axis=${axis}]`);
  fig.querySelector("img").src = sliceUrl(axis);
  fig.querySelector("input").value = state.index[axis];
  fig.querySelector(".idx").textContent = `${state.index[axis] + 1} / ${state.info.shape[axis]}`;
}

function drawAll() {
  for (const axis of ["axial", "coronal", "sagittal"]) draw(axis);
  $("#mip").src = `/api/studies/${state.id}/mip.png?suv_max=${$("#suvmax").value}`;
  $("#suvmax-label").textContent = $("#suvmax").value;
}

function setIndex(axis, value) {
  const n = state.info.shape[axis];
  state.index[axis] = Math.max(0, Math.min(n - 1, value));
  draw(axis);
}

async function openStudy(id) {
  state.id = id;
  state.info = await api(`/api/studies/${id}`);
  const sel = $("#window");
  sel.innerHTML = "";
  for (const name of Object.keys(state.info.windows)) {
    const o = document.createElement("option");
    o.value = name; o.textContent = name.replace("_", " ");
    sel.appendChild(o);
  }
  $("#suvmax").value = state.info.suv_max;
  $("#units").textContent = state.info.pet_units;
  for (const axis of ["axial", "coronal", "sagittal"]) {
    state.index[axis] = Math.floor(state.info.shape[axis] / 2);
    const fig = document.querySelector(`.view[data-axis=${axis}]`);
    fig.querySelector("input").max = state.info.shape[axis] - 1;
  }
  $("#main").hidden = false;
  drawAll();
}

$("#upload-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const files = $("#files").files;
  if (!files.length) { setStatus("choose a zip of DICOM files or two NIfTI files", true); return; }
  const form = new FormData();
  for (const f of files) form.append("files", f, f.name);
  $("#upload").disabled = true;
  setStatus("uploading ...");
  try {
    const res = await api("/api/studies", { method: "POST", body: form });
    await openStudy(res.id);
    setStatus(`study ${res.id} (${res.layout})`);
  } catch (e) {
    setStatus(e.message, true);
  } finally {
    $("#upload").disabled = false;
  }
});

for (const fig of views()) {
  const axis = fig.dataset.axis;
  fig.querySelector("input").addEventListener("input", (ev) => setIndex(axis, +ev.target.value));
  fig.querySelector("img").addEventListener("wheel", (ev) => {
    ev.preventDefault();
    setIndex(axis, state.index[axis] + (ev.deltaY > 0 ? 1 : -1));
  }, { passive: false });
}
for (const id of ["#window", "#opacity", "#suvmax", "#show-attention"]) {
  $(id).addEventListener("change", drawAll);
}

function lesionLabel(f) {
  const place = (f.location_detail || f.location || "?").replace(/_/g, " ");
  const side = f.laterality && !["none", "both"].includes(f.laterality) ? ` (${f.laterality})` : "";
  const uptake = f.fdg_avid ? "FDG-avid" : "not FDG-avid";
  const suv = f.suvmax != null ? `, SUVmax ${f.suvmax}` : "";
  const size = f.size_mm != null ? `, ${f.size_mm} mm` : "";
  return `${f.type.replace(/_/g, " ")}, ${place}${side}: ${uptake}${suv}${size}`;
}

function selectFinding(f, li) {
  state.finding = f.id;
  document.querySelectorAll("#findings li").forEach((x) => x.classList.remove("selected"));
  li.classList.add("selected");
  if (f.display_voxel) {
    const [d, h, w] = f.display_voxel;
    state.index.axial = d; state.index.coronal = h; state.index.sagittal = w;
  }
  drawAll();
}

function showReport(rep) {
  state.report = rep;
  $("#report-text").textContent = rep.text;
  const list = $("#findings");
  list.innerHTML = "";
  for (const f of rep.findings) {
    const li = document.createElement("li");
    const status = f.guard.status;
    li.className = status;
    li.dataset.finding = f.id;
    li.innerHTML = `<span class="label"></span><span class="badge ${status}">${status}</span>`;
    li.querySelector(".label").textContent = lesionLabel(f);
    if (f.guard.looked_elsewhere) {
      li.insertAdjacentHTML("beforeend", '<span class="badge elsewhere">looked elsewhere</span>');
    }
    for (const d of f.guard.differences) {
      const s = document.createElement("span");
      s.className = "diff"; s.textContent = d;
      li.appendChild(s);
    }
    li.addEventListener("click", () => selectFinding(f, li));
    list.appendChild(li);
  }
  const om = $("#omitted");
  om.innerHTML = "";
  for (const o of rep.omitted) {
    const li = document.createElement("li");
    li.textContent = `${o.region.replace(/_/g, " ")}: ${lesionLabel(o)}`;
    om.appendChild(li);
  }
  if (!rep.omitted.length) om.innerHTML = "<li>none</li>";
}

$("#report-btn").addEventListener("click", async () => {
  $("#report-btn").disabled = true;
  setStatus("writing the report ...");
  try {
    const rep = await api(`/api/studies/${state.id}/report?lang=${$("#lang").value}`, { method: "POST" });
    showReport(rep);
    const g = rep.guard;
    setStatus(`report written: ${g.supported || 0} supported, ${g.differs || 0} differ, ${g.unsupported || 0} unsupported, ${g.omitted || 0} omitted`);
  } catch (e) {
    setStatus(e.message, true);
  } finally {
    $("#report-btn").disabled = false;
  }
});

$("#ask-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const question = $("#question").value.trim();
  if (!question) return;
  $("#ask").disabled = true;
  try {
    const res = await api(`/api/studies/${state.id}/ask`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ question, lang: $("#lang").value, history: state.history }),
    });
    state.history.push([question, res.answer]);
    const li = document.createElement("li");
    li.innerHTML = '<span class="q"></span><br><span class="a"></span>';
    li.querySelector(".q").textContent = question;
    li.querySelector(".a").textContent = res.answer;
    $("#answers").appendChild(li);
    $("#question").value = "";
  } catch (e) {
    setStatus(e.message, true);
  } finally {
    $("#ask").disabled = false;
  }
});
