// The page's only script: read /api/info, submit a job, poll it, show its previews and results. No libraries.
"use strict";
const $ = (id) => document.getElementById(id);
const POLL_MS = 250;
let current = null; // id of the job this page waits for

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

async function json(response) {
  const body = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
  if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
  return body;
}

async function loadInfo() {
  const info = await json(await fetch("/api/info"));
  $("model").textContent = `${info.checkpoint || "model"} (step ${info.step}): ${info.classes.join(", ")}`;
  for (const name of info.classes) $("classes").append(new Option(name));
  for (const name of info.samplers) $("sampler").append(new Option(name, name, false, name === info.defaults.sampler));
  $("steps").max = info.limits.max_steps;
  $("steps").value = info.defaults.steps;
  $("strength").value = $("strength-shown").value = info.defaults.strength;
  $("n").max = info.limits.max_images;
  $("guidance").max = info.limits.max_guidance;
  $("guidance").value = info.defaults.guidance;  // the model's default: 3 for a class model, 7 for a text one
  $("prompt").maxLength = $("negative").maxLength = info.limits.max_prompt_chars;
}

// Editing: the uploaded image (a data: URL, sent as it is) and the mask, painted on a canvas of the image's own size
// (white = generate, transparent = keep; the server composites it on black) or uploaded as a file.
const upload = { image: null, mask: null, painted: false };

function readFile(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(new Error(`cannot read ${file.name}`));
    reader.readAsDataURL(file);
  });
}

function showMode() {
  const mode = $("mode").value;
  $("edit-fields").hidden = mode === "generate";
  $("strength-box").hidden = mode !== "edit";
  $("mask-box").hidden = mode !== "inpaint";
}

async function chooseImage() {
  const file = $("image").files[0];
  upload.image = file ? await readFile(file) : null;
  if (!upload.image) return;
  $("source").src = upload.image;
  await $("source").decode();
  const canvas = $("mask-canvas");
  canvas.width = $("source").naturalWidth;
  canvas.height = $("source").naturalHeight;
  upload.painted = false;
}

function paint(event) {
  if (!(event.buttons & 1) || !upload.image) return;
  const canvas = $("mask-canvas");
  const box = canvas.getBoundingClientRect();
  const x = (event.clientX - box.left) * canvas.width / box.width;
  const y = (event.clientY - box.top) * canvas.height / box.height;
  const r = Number($("brush").value) * canvas.width / box.width;
  const context = canvas.getContext("2d");
  context.fillStyle = "white";
  context.beginPath();
  context.arc(x, y, r, 0, 2 * Math.PI);
  context.fill();
  upload.painted = true;
  upload.mask = null;
}

function request() {
  const number = (id) => Number($(id).value);
  const body = {
    prompt: $("prompt").value, negative: $("negative").value, n: number("n"), sampler: $("sampler").value,
    steps: number("steps"), guidance: number("guidance"), seed: number("seed"), mode: $("mode").value,
  };
  if (body.mode !== "generate") body.image = upload.image || "";
  if (body.mode === "edit") body.strength = number("strength");
  if (body.mode === "inpaint") body.mask = upload.mask || (upload.painted ? $("mask-canvas").toDataURL("image/png") : "");
  return body;
}

function describe(job) {
  if (job.state === "queued") return job.position === 1 ? "waiting: next in line" : `waiting: ${job.position} in line`;
  if (job.state === "running") {
    const eta = job.eta_s == null ? "" : `, about ${Math.ceil(job.eta_s)} s left`;
    return `denoising: step ${job.step} of ${job.steps}${eta}`;
  }
  if (job.state === "done") return `done in ${job.seconds.toFixed(1)} s`;
  return "failed";
}

function showResult(job) {
  $("grid").src = job.grid;
  $("grid-download").href = `${job.grid}?download=1`;
  $("singles").replaceChildren(...job.images.map((url, j) => {
    const figure = document.createElement("figure");
    const img = new Image();
    img.src = url;
    img.alt = `image ${j + 1}`;
    img.className = "single";
    const link = document.createElement("a");
    link.href = `${url}?download=1`;
    link.download = "";
    link.textContent = `download ${j + 1}`;
    figure.append(img, link);
    return figure;
  }));
  $("settings").textContent = JSON.stringify(job.settings, null, 2);
  $("results").hidden = false;
}

async function poll(id) {
  let seenPreview = 0;
  while (current === id) {
    let job;
    try {
      job = await json(await fetch(`/api/jobs/${id}`));
    } catch (e) {
      showError(`lost track of the request: ${e.message}`);
      break;
    }
    $("status").textContent = describe(job);
    $("progress").value = job.steps ? job.step / job.steps : 0;
    if (job.preview_version > seenPreview) {
      seenPreview = job.preview_version;
      $("preview").src = `/api/jobs/${id}/preview.png?v=${seenPreview}`;
      $("preview-box").hidden = false;
    }
    if (job.state === "done") { showResult(job); break; }
    if (job.state === "failed") { showError(job.error); break; }
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
  if (current === id) { current = null; $("generate").disabled = false; }
}

async function submit(event) {
  event.preventDefault();
  showError("");
  $("generate").disabled = true;
  try {
    const job = await json(await fetch("/api/jobs", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(request()),
    }));
    current = job.id;
    $("results").hidden = true;
    $("preview-box").hidden = true;
    $("progress").value = 0;
    $("status").textContent = "queued";
    $("work").hidden = false;
    poll(job.id);
  } catch (e) {
    showError(e.message);
    $("generate").disabled = false;
  }
}

$("form").addEventListener("submit", submit);
$("mode").addEventListener("change", showMode);
$("image").addEventListener("change", () => chooseImage().catch((e) => showError(e.message)));
$("mask-file").addEventListener("change", async () => {
  const file = $("mask-file").files[0];
  upload.mask = file ? await readFile(file) : null;
});
$("mask-canvas").addEventListener("pointerdown", paint);
$("mask-canvas").addEventListener("pointermove", paint);
$("clear-mask").addEventListener("click", () => {
  const canvas = $("mask-canvas");
  canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
  upload.painted = false;
  upload.mask = null;
  $("mask-file").value = "";
});
$("strength").addEventListener("input", () => { $("strength-shown").value = $("strength").value; });
showMode();
$("random-seed").addEventListener("click", () => { $("seed").value = Math.floor(Math.random() * 2 ** 31); });
loadInfo().catch((e) => showError(`cannot reach the server: ${e.message}`));
