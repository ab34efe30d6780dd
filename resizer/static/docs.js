// Interactive API docs rendered from /api/v1/openapi.json: no CDN, no framework.
"use strict";
(function () {
  const el = (tag, attrs = {}, ...kids) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    for (const kid of kids) e.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
    return e;
  };
  let spec;
  const deref = (s) => (s && s.$ref ? spec.components.schemas[s.$ref.split("/").pop()] : s);

  function schemaTable(schema) {
    schema = deref(schema);
    if (!schema || !schema.properties) return el("pre", {}, JSON.stringify(schema, null, 2));
    const rows = Object.entries(schema.properties).map(([name, p]) => {
      const t = describe(p);
      const req = (schema.required || []).includes(name) ? " (required)" : "";
      return el("tr", {}, el("td", {}, el("code", {}, name + req)), el("td", {}, t), el("td", {}, p.description || ""));
    });
    return el("table", {}, el("tr", {}, el("th", {}, "field"), el("th", {}, "type"), el("th", {}, "meaning")), ...rows);
  }

  function describe(p) {
    if (p.$ref) return p.$ref.split("/").pop();
    if (p.anyOf) return p.anyOf.map(describe).filter((x) => x !== "null").join(" | ");
    if (p.enum) return p.enum.join(" | ");
    if (p.const !== undefined) return JSON.stringify(p.const);
    let t = p.type || "any";
    if (t === "array") t = describe(p.items || {}) + "[]";
    const range = [p.minimum !== undefined ? "min " + p.minimum : "", p.maximum !== undefined ? "max " + p.maximum : "",
      p.pattern ? "pattern " + p.pattern : "", p.maxItems !== undefined ? "at most " + p.maxItems : ""].filter(Boolean);
    return range.length ? t + " (" + range.join(", ") + ")" : t;
  }

  function tryIt(path, method) {
    const out = el("pre", { class: "out" });
    const form = el("form");
    if (method === "post") {
      form.append(el("label", {}, "image ", el("input", { type: "file", name: "image", required: "" })),
        el("label", {}, "options (JSON) ", el("input", { name: "opts", value: '{"width": 300, "format": "webp"}', size: 50 })));
    } else if (path.includes("{token}")) {
      form.append(el("label", {}, "token ", el("input", { name: "token", size: 40, required: "" })));
    }
    form.append(el("label", {}, "API key ", el("input", { name: "key", type: "password", size: 20 })),
      el("button", { type: "submit" }, "Send"));
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const f = new FormData(form);
      const headers = {};
      if (f.get("key")) headers.Authorization = "Bearer " + f.get("key");
      let url = path, init = { method: method.toUpperCase(), headers };
      if (method === "post") {
        const body = new FormData();
        body.append("image", f.get("image"));
        try {
          for (const [k, v] of Object.entries(JSON.parse(f.get("opts") || "{}"))) body.append(k, typeof v === "object" ? JSON.stringify(v) : v);
        } catch (e) { out.textContent = "options: " + e.message; return; }
        init.body = body;
      }
      if (f.get("token")) url = path.replace("{token}", encodeURIComponent(f.get("token")));
      out.textContent = "…";
      const r = await fetch(url, init);
      out.textContent = r.status + " " + r.statusText + "\n" + JSON.stringify(await r.json(), null, 2);
    });
    return el("div", { class: "try" }, el("h4", {}, "Try it"), form, out);
  }

  fetch("/api/v1/openapi.json").then((r) => r.json()).then((s) => {
    spec = s;
    document.getElementById("intro").textContent = s.info.description + " (version " + s.info.version + ")";
    const main = document.getElementById("ops");
    for (const [path, ops] of Object.entries(s.paths)) {
      for (const [method, op] of Object.entries(ops)) {
        const sec = el("section", {}, el("h2", {}, el("span", { class: "method " + method }, method.toUpperCase()), " ", path),
          el("p", {}, op.summary || ""));
        const params = (op.parameters || []).filter((p) => p.in !== "query");
        if (params.length) sec.append(el("h3", {}, "Parameters"), el("ul", {}, ...params.map((p) =>
          el("li", {}, el("code", {}, p.name), " (" + p.in + ") " + (p.description || "")))));
        if (op.requestBody) {
          sec.append(el("h3", {}, "Request body"));
          for (const [ct, c] of Object.entries(op.requestBody.content)) sec.append(el("h4", {}, ct), schemaTable(c.schema));
        }
        sec.append(el("h3", {}, "Responses"), el("ul", {}, ...Object.entries(op.responses).map(([code, r]) =>
          el("li", {}, el("strong", {}, code), " " + r.description))));
        if (path.startsWith("/api/")) sec.append(tryIt(path, method));
        main.append(sec);
      }
    }
  }).catch((e) => { document.getElementById("intro").textContent = "Could not load the API document: " + e; });
})();
