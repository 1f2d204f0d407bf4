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
  $("n").max = info.limits.max_images;
  $("guidance").max = info.limits.max_guidance;
  $("prompt").maxLength = $("negative").maxLength = info.limits.max_prompt_chars;
}

function request() {
  const number = (id) => Number($(id).value);
  return {
    prompt: $("prompt").value, negative: $("negative").value, n: number("n"), sampler: $("sampler").value,
    steps: number("steps"), guidance: number("guidance"), seed: number("seed"),
  };
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
$("random-seed").addEventListener("click", () => { $("seed").value = Math.floor(Math.random() * 2 ** 31); });
loadInfo().catch((e) => showError(`cannot reach the server: ${e.message}`));
