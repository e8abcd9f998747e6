// virtkit's web UI: every change is a call of the REST API (with the session's CSRF token);
// pages re-render their live regions when the event stream says something changed.
// All URLs are relative to <base href>, so the UI works under any reverse-proxy sub-path.
"use strict";

(function () {
  const csrfMeta = document.querySelector('meta[name="csrf-token"]');
  const csrf = csrfMeta ? csrfMeta.content : null;

  // -- messages ---------------------------------------------------------------------------

  function toast(text, kind, key) {
    const box = document.getElementById("toasts");
    if (!box) return null;
    let item = key ? box.querySelector(`[data-key="${CSS.escape(key)}"]`) : null;
    if (!item) {
      item = document.createElement("div");
      item.className = "toast";
      if (key) item.dataset.key = key;
      const close = document.createElement("button");
      close.type = "button";
      close.className = "link";
      close.textContent = "×";
      close.setAttribute("aria-label", "Dismiss");
      close.addEventListener("click", () => item.remove());
      item.append(document.createElement("span"), close);
      box.append(item);
    }
    item.firstChild.textContent = text;
    item.classList.toggle("error", kind === "error");
    item.classList.toggle("ok", kind === "ok");
    clearTimeout(item._timer);
    if (kind !== "progress") item._timer = setTimeout(() => item.remove(), kind === "error" ? 15000 : 6000);
    return item;
  }

  class ApiError extends Error {
    constructor(status, body) {
      super(body && body.message ? body.message : `HTTP ${status}`);
      this.status = status;
      this.code = body && body.code;
    }
  }

  // One call of the API: the parsed JSON (or text), an ApiError with the API's message.
  async function api(method, path, body) {
    const headers = { Accept: "application/json" };
    if (csrf && method !== "GET") headers["X-CSRF-Token"] = csrf;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
    });
    const type = response.headers.get("content-type") || "";
    const data = type.includes("json") ? await response.json() : await response.text();
    if (response.status === 401 && !path.endsWith("api/v1/login")) {
      window.location.href = "login?next=" + encodeURIComponent(currentPath());
    }
    if (!response.ok) throw new ApiError(response.status, data);
    return { status: response.status, data };
  }

  function currentPath() {
    const base = new URL(document.baseURI);
    return window.location.pathname.slice(base.pathname.length) + window.location.search;
  }

  // -- tasks: followed on the event stream ------------------------------------------------

  const watched = new Map(); // task id -> {resolve, reject, onProgress}

  function followTask(task, onProgress) {
    return new Promise((resolve, reject) => {
      watched.set(task.id, { resolve, reject, onProgress });
      // The task may have finished before the stream told us: ask once.
      api("GET", `api/v1/tasks/${task.id}`).then(({ data }) => taskEvent(data)).catch(() => {});
    });
  }

  function taskEvent(task) {
    const w = watched.get(task.id);
    if (!w) return;
    if (w.onProgress) w.onProgress(task);
    if (task.state === "succeeded") {
      watched.delete(task.id);
      w.resolve(task);
    } else if (task.state === "failed") {
      watched.delete(task.id);
      w.reject(new ApiError(500, task.error || { message: "the task failed" }));
    }
  }

  function describe(task) {
    const p = task.progress || {};
    const pct = p.percent != null ? ` ${Math.round(p.percent)} %` : "";
    return `${task.kind} ${task.target}: ${p.phase || task.state}${pct}`;
  }

  // A call that may answer 202 with a task: wait for it, with a toast showing its progress.
  async function run(method, path, body, label) {
    const { status, data } = await api(method, path, body);
    if (status === 202 && data && data.id) {
      toast(describe(data), "progress", data.id);
      const done = await followTask(data, (t) => toast(describe(t), "progress", t.id));
      toast(`${label || done.kind}: done`, "ok", done.id);
      return done;
    }
    toast(`${label}: done`, "ok");
    return data;
  }

  // -- the event stream -------------------------------------------------------------------

  let pending = {};
  function signal(kind) {
    if (pending[kind]) return;
    pending[kind] = setTimeout(() => {
      pending[kind] = null;
      document.body.dispatchEvent(new CustomEvent(kind, { bubbles: true }));
    }, 250);
  }

  function listen() {
    if (!csrf || typeof EventSource === "undefined") return;
    const source = new EventSource("api/v1/events");
    source.addEventListener("vm", () => signal("vk-vm"));
    source.addEventListener("task", (e) => {
      try {
        taskEvent(JSON.parse(e.data));
      } catch (_) { /* not JSON: ignore */ }
      signal("vk-task");
    });
    window.addEventListener("beforeunload", () => source.close());
  }

  // -- buttons and forms ------------------------------------------------------------------

  function splitAction(spec) {
    const i = spec.indexOf(" ");
    return [spec.slice(0, i), spec.slice(i + 1)];
  }

  async function onApiButton(button) {
    if (button.dataset.confirm && !window.confirm(button.dataset.confirm)) return;
    const [method, path] = splitAction(button.dataset.api);
    const body = button.dataset.body ? JSON.parse(button.dataset.body) : undefined;
    button.disabled = true;
    try {
      await run(method, path, body, button.textContent.trim());
      if ("reload" in button.dataset) window.location.reload();
    } catch (err) {
      toast(err.message, "error");
    } finally {
      button.disabled = false;
    }
  }

  function formValues(form) {
    const values = {};
    for (const el of form.elements) {
      if (!el.name || el.disabled) continue;
      if (el.type === "checkbox") values[el.name] = el.checked;
      else if (el.type === "radio") { if (el.checked) values[el.name] = el.value; }
      else if (el.value !== "") values[el.name] = el.type === "number" ? Number(el.value) : el.value;
    }
    return values;
  }

  async function onApiForm(form) {
    const [method, path] = splitAction(form.dataset.apiForm);
    const submit = form.querySelector('[type="submit"]');
    if (submit) submit.disabled = true;
    try {
      await run(method, path, formValues(form), form.getAttribute("aria-label") || "saved");
      if ("reload" in form.dataset) window.location.reload();
    } catch (err) {
      toast(err.message, "error");
    } finally {
      if (submit) submit.disabled = false;
    }
  }

  async function bulk(action, button) {
    const names = [...document.querySelectorAll('input[name="vm"]:checked')].map((b) => b.value);
    if (!names.length) return toast("Select one or more VMs first.", "error");
    if (button.dataset.confirm && !window.confirm(button.dataset.confirm)) return;
    const body = action === "shutdown" ? { timeout: 60, force: false } : undefined;
    const results = await Promise.allSettled(
      names.map((n) => run("POST", `api/v1/vms/${encodeURIComponent(n)}/${action}`, body, `${action} ${n}`))
    );
    results.forEach((r, i) => { if (r.status === "rejected") toast(`${names[i]}: ${r.reason.message}`, "error"); });
  }

  // Delete: say what goes (the VM's own disks, from delete-preview) before anything goes.
  async function deleteVm(name) {
    const dialog = document.getElementById("delete-dialog");
    const list = dialog.querySelector("#delete-storage");
    const error = dialog.querySelector(".error");
    error.hidden = true;
    list.textContent = "";
    const { data: disks } = await api("GET", `api/v1/vms/${encodeURIComponent(name)}/delete-preview`);
    if (disks.length) {
      const label = document.createElement("label");
      const box = document.createElement("input");
      box.type = "checkbox";
      box.name = "remove_storage";
      label.append(box, ` Also delete, for good, the files virtkit made for it (${disks.length}):`);
      const ul = document.createElement("ul");
      for (const d of disks) {
        const li = document.createElement("li");
        const code = document.createElement("code");
        code.textContent = d;
        li.append(code);
        ul.append(li);
      }
      list.append(label, ul);
    } else {
      list.textContent = "It has no disks of its own: no storage is deleted.";
    }
    dialog.returnValue = "";
    dialog.showModal();
    dialog.addEventListener("close", async function onClose() {
      dialog.removeEventListener("close", onClose);
      if (dialog.returnValue !== "delete") return;
      const remove = list.querySelector('input[name="remove_storage"]');
      const query = `force=true&remove_storage=${remove && remove.checked ? "true" : "false"}`;
      try {
        const { data } = await api("DELETE", `api/v1/vms/${encodeURIComponent(name)}?${query}`);
        toast(`deleted ${name}` + (data.removed.length ? `, with ${data.removed.length} volume(s)` : ""), "ok");
        window.location.href = "vms";
      } catch (err) {
        toast(err.message, "error");
      }
    });
  }

  // -- the create wizard ------------------------------------------------------------------

  function vmSpec(v) {
    const spec = { name: v.name, vcpus: v.vcpus || 1, memory: v.memory || "1G", graphics: v.graphics };
    const size = v.disk_size;
    if (v.source === "template" && v.template) spec.disks = [{ image: v.template, linked: true, ...(size ? { size } : {}) }];
    else if (v.source === "image" && v.image) spec.disks = [{ image: v.image, linked: false, ...(size ? { size } : {}) }];
    else if (v.source === "blank") {
      spec.disks = [{ size: size || "10G" }];
      if (v.cdrom) spec.cdrom = v.cdrom;
    } else if (v.source === "kernel") {
      spec.kernel = v.kernel;
      if (v.initrd) spec.initrd = v.initrd;
      if (v.cmdline) spec.cmdline = v.cmdline;
    }
    if (v.network === "@user") spec.nics = [{ user: true }];
    else if (v.network) spec.nics = [{ network: v.network }];
    if (v.cloud_init && (v.source === "template" || v.source === "image")) {
      const ci = {};
      if (v.ci_user) ci.user = v.ci_user;
      if (v.ci_key) ci.ssh_keys = v.ci_key.split("\n").map((k) => k.trim()).filter(Boolean);
      if (v.ci_packages) ci.packages = v.ci_packages.split(/[\s,]+/).filter(Boolean);
      spec.cloud_init = ci;
    }
    return spec;
  }

  async function createVm(form) {
    const error = document.getElementById("create-error");
    const box = document.getElementById("create-progress");
    const phase = document.getElementById("create-phase");
    const bar = document.getElementById("create-bar");
    error.hidden = true;
    const v = formValues(form);
    const spec = vmSpec(v);
    const submit = form.querySelector('[type="submit"]');
    submit.disabled = true;
    try {
      const { data: task } = await api("POST", `api/v1/vms?start=${v.start ? "true" : "false"}`, spec);
      box.hidden = false;
      phase.textContent = describe(task);
      await followTask(task, (t) => {
        phase.textContent = describe(t);
        if (t.progress && t.progress.percent != null) bar.value = t.progress.percent;
      });
      window.location.href = `vms/${encodeURIComponent(spec.name)}`;
    } catch (err) {
      box.hidden = true;
      error.textContent = err.message;
      error.hidden = false;
      error.focus && error.focus();
    } finally {
      submit.disabled = false;
    }
  }

  // -- login and logout -------------------------------------------------------------------

  async function login(form) {
    const error = document.getElementById("login-error");
    error.hidden = true;
    try {
      await api("POST", "api/v1/login", { user: form.user.value, password: form.password.value });
      window.location.href = form.dataset.next || "./";
    } catch (err) {
      error.textContent = err.message;
      error.hidden = false;
    }
  }

  // -- wiring -----------------------------------------------------------------------------

  document.addEventListener("click", (e) => {
    const t = e.target.closest("button, input[type=checkbox]");
    if (!t) return;
    if (t.dataset.api) { e.preventDefault(); onApiButton(t); }
    else if (t.dataset.bulk) { e.preventDefault(); bulk(t.dataset.bulk, t); }
    else if (t.dataset.deleteVm) { e.preventDefault(); deleteVm(t.dataset.deleteVm).catch((err) => toast(err.message, "error")); }
    else if ("logout" in t.dataset) {
      api("POST", "api/v1/logout").finally(() => { window.location.href = "login"; });
    } else if ("selectAll" in t.dataset) {
      document.querySelectorAll('input[name="vm"]').forEach((b) => { b.checked = t.checked; });
    }
  });

  document.addEventListener("submit", (e) => {
    const form = e.target;
    if (form.id === "login") { e.preventDefault(); login(form); }
    else if (form.id === "create-vm") { e.preventDefault(); createVm(form); }
    else if (form.dataset.apiForm) { e.preventDefault(); onApiForm(form); }
  });

  // htmx: its requests carry the CSRF token; a live region keeps the VMs ticked in it.
  document.addEventListener("htmx:configRequest", (e) => { if (csrf) e.detail.headers["X-CSRF-Token"] = csrf; });
  let ticked = [];
  document.addEventListener("htmx:beforeSwap", () => {
    ticked = [...document.querySelectorAll('input[name="vm"]:checked')].map((b) => b.value);
  });
  document.addEventListener("htmx:afterSwap", () => {
    for (const name of ticked) {
      const box = document.querySelector(`input[name="vm"][value="${CSS.escape(name)}"]`);
      if (box) box.checked = true;
    }
  });

  window.virtkit = { api, run, toast, followTask };
  listen();
})();
