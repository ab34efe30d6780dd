// The upload page: multipart POST to the public API, long-poll the status, show the result.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const form = $("upload"), drop = $("drop"), fileInput = $("file"), statusLine = $("status");
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

  async function call(url, init) {
    const key = $("key").value.trim();
    init = init || {};
    init.headers = Object.assign({}, init.headers, key ? { Authorization: "Bearer " + key } : {});
    const r = await fetch(url, init);
    const body = await r.json();
    if (!r.ok) throw new Error((body.error && body.error.code + ": " + body.error.message) || r.statusText);
    return body;
  }

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    if (!file) { say("Choose an image first.", true); return; }
    localStorage.setItem("resizer-api-key", $("key").value.trim());
    $("result").hidden = true;
    $("submit").disabled = true;
    const body = new FormData();
    body.append("image", file);
    for (const name of ["width", "height", "fit", "format"]) {
      const v = $(name).value.trim();
      if (v) body.append(name, v);
    }
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
      $("output").src = status.resized_image_url;
      $("download").href = status.resized_image_url;
      $("meta").textContent = out.width + "×" + out.height + " " + out.format + ", " + out.bytes.toLocaleString() +
        " bytes; the link works until " + new Date(status.expires_at).toLocaleTimeString();
      $("result").hidden = false;
      say("Done.");
    } catch (err) {
      say(err.message, true);
    } finally {
      $("submit").disabled = false;
    }
  });
})();
