// The upload page: multipart POST to the public API, long-poll the status, show the result.
// While the result loads, the status's placeholder is painted: its average colour at once, then its
// BlurHash decoded into a small canvas and stretched over the image's box (kept if the image fails).
import { decode } from "./blurhash.js";

const $ = (id) => document.getElementById(id);
const form = $("upload"), drop = $("drop"), fileInput = $("file"), statusLine = $("status");
const frame = $("frame"), output = $("output");
const BLURHASH_SIDE = 32;  // pixels decoded on the long side; the browser's scaling smooths the rest
let file = null;
$("key").value = localStorage.getItem("resizer-api-key") || "";

function choose(f) {
  if (!f) return;
  file = f;
  $("chosen").textContent = f.name + " (" + Math.round(f.size / 1024) + " KB)";
}
fileInput.addEventListener("change", () => choose(fileInput.files[0]));
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault(); drop.classList.remove("over");
  choose(e.dataTransfer.files[0]);
});

function say(text, isError) {
  statusLine.textContent = text;
  statusLine.className = isError ? "error" : "";
}

function megabytes(n) {
  return n >= 1e6 ? (n / 1e6).toFixed(1) + " MB" : Math.max(1, Math.round(n / 1e3)) + " KB";
}

async function call(url, init) {
  const key = $("key").value.trim();
  init = init || {};
  init.headers = Object.assign({}, init.headers, key ? { Authorization: "Bearer " + key } : {});
  const r = await fetch(url, init);
  if (r.status === 204) return {};
  let body;
  try {
    body = await r.json();
  } catch (err) {
    throw new Error("The service answered " + r.status + " " + r.statusText + " without JSON.");
  }
  if (!r.ok) throw new Error((body.error && body.error.code + ": " + body.error.message) || r.statusText);
  return body;
}

// -- watermarks -----------------------------------------------------------------------------
const marks = $("watermark");
const markControls = ["wm-gravity", "wm-opacity", "wm-scale", "wm-margin"].map($);

function markChosen() {
  for (const control of markControls) control.disabled = !marks.value;
}

// The note is in the legend (see style.css): a long message is cut there and is whole in its title.
function note(text) {
  $("wm-note").textContent = text;
  $("wm-note").title = text;
}

async function loadWatermarks(select) {
  const keep = select || marks.value;
  try {
    const body = await call("/api/v1/watermarks");
    marks.replaceChildren(new Option("none", ""));
    for (const m of body.watermarks) {
      marks.add(new Option(m.name + " (" + m.width + "×" + m.height + ")", m.name));
    }
    marks.value = body.watermarks.some((m) => m.name === keep) ? keep : "";
    note(body.watermarks.length ? "" : "none stored yet");
  } catch (err) {
    marks.replaceChildren(new Option("none", ""));
    note(err.message.startsWith("unauthorized") ? "enter the API key to see yours" : err.message);
  }
  markChosen();
}

marks.addEventListener("change", markChosen);
$("wm-opacity").addEventListener("input", () => { $("wm-opacity-value").textContent = $("wm-opacity").value; });
$("key").addEventListener("change", () => {
  localStorage.setItem("resizer-api-key", $("key").value.trim());
  loadWatermarks();
});

$("wm-upload").addEventListener("click", async () => {
  const name = $("wm-name").value.trim(), image = $("wm-file").files[0];
  if (!name || !image) { say("Give the watermark a name and choose a PNG or WebP file.", true); return; }
  $("wm-upload").disabled = true;
  try {
    const body = await call("/api/v1/watermarks/" + encodeURIComponent(name), {
      method: "PUT", body: image, headers: { "Content-Type": image.type || "application/octet-stream" },
    });
    const m = body.watermark;
    say("Stored watermark " + m.name + " (" + m.width + "×" + m.height + ", " + megabytes(m.bytes) + ").");
    await loadWatermarks(m.name);
    $("wm-new").open = false;
  } catch (err) {
    say(err.message, true);
  } finally {
    $("wm-upload").disabled = false;
  }
});

function watermarkOption() {
  if (!marks.value) return null;
  return {
    image: marks.value,
    gravity: $("wm-gravity").value,
    opacity: Number($("wm-opacity").value),
    scale: Math.min(100, Math.max(1, Number($("wm-scale").value) || 20)) / 100,
    margin: Math.max(0, Math.round(Number($("wm-margin").value) || 0)),
  };
}

// -- the result and its placeholder ---------------------------------------------------------
function clearResult() {
  $("result").hidden = true;
  frame.classList.remove("loaded");
  delete frame.dataset.placeholder;
  delete frame.dataset.blurhash;
  frame.style.backgroundColor = "";
  frame.style.backgroundImage = "";
  output.removeAttribute("src");
}

// A tiny canvas, stretched by CSS over the image's box: BlurHash is meant to be decoded small.
function blurhashUrl(hash, width, height) {
  const scale = BLURHASH_SIDE / Math.max(width, height);
  const w = Math.max(1, Math.round(width * scale)), h = Math.max(1, Math.round(height * scale));
  const canvas = document.createElement("canvas");
  canvas.width = w;
  canvas.height = h;
  const ctx = canvas.getContext("2d");
  const pixels = ctx.createImageData(w, h);
  pixels.data.set(decode(hash, w, h));
  ctx.putImageData(pixels, 0, 0);
  return canvas.toDataURL("image/png");
}

function paintPlaceholder(placeholder, out) {
  frame.style.aspectRatio = out.width + " / " + out.height;
  frame.style.width = out.width + "px";
  if (!placeholder) return;
  frame.style.backgroundColor = placeholder.color;  // at once: one colour costs nothing
  frame.dataset.placeholder = placeholder.color;
  try {
    frame.style.backgroundImage = "url(" + blurhashUrl(placeholder.blurhash, out.width, out.height) + ")";
    frame.dataset.blurhash = "painted";
  } catch (err) {
    frame.dataset.blurhash = "invalid";  // the colour stays; a bad hash must not hide the result
  }
}

output.addEventListener("load", () => {
  frame.classList.add("loaded");
  say("Done.");
});
output.addEventListener("error", () => {
  if (output.getAttribute("src")) say("The image did not load (has the link expired?); its colours are shown.", true);
});

form.addEventListener("submit", async (e) => {
  e.preventDefault();
  if (!file) { say("Choose an image first.", true); return; }
  localStorage.setItem("resizer-api-key", $("key").value.trim());
  clearResult();
  $("submit").disabled = true;
  const body = new FormData();
  body.append("image", file);
  for (const name of ["width", "height", "fit", "gravity", "format"]) {
    const v = $(name).value.trim();
    if (v) body.append(name, v);
  }
  const mark = watermarkOption();
  if (mark) body.append("watermark", JSON.stringify(mark));
  try {
    say("Uploading…");
    const job = await call("/api/v1/resize", { method: "POST", body });
    let status;
    do {
      say("Job " + job.token + ": " + (status ? status.status : "PENDING") + "…");
      if (status) await new Promise((r) => setTimeout(r, 200));  // the server may answer early when busy
      status = await call(job.status_url + "?wait=15");
    } while (status.status === "PENDING" || status.status === "IN_PROGRESS");
    if (status.status === "FAILURE") throw new Error(status.error.code + ": " + status.error.message);
    const out = Object.values(status.variants)[0];
    paintPlaceholder(status.placeholder, out);
    $("result").dataset.token = job.token;
    $("result").hidden = false;
    say("Loading the image…");
    output.src = status.resized_image_url;
    $("download").href = status.resized_image_url;
    $("meta").textContent = out.width + "×" + out.height + " " + out.format + ", " + out.bytes.toLocaleString() +
      " bytes; the link works until " + new Date(status.expires_at).toLocaleTimeString() +
      (status.reused ? " (an identical earlier job's result, reused)" : "");
    const src = status.source;
    $("source").textContent = src ? "From a " + src.width + "×" + src.height + " " + src.format + " of " +
      megabytes(src.bytes) + "." : "";
  } catch (err) {
    say(err.message, true);
  } finally {
    $("submit").disabled = false;
  }
});

loadWatermarks();
