// The consoles of a VM page: VNC through noVNC, serial through xterm.js. Each connection first
// gets a one-shot ticket from the API (valid 30 s), then opens the service's websocket with it.
import RFB from "../vendor/@novnc/novnc/core/rfb.js";

const root = document.getElementById("consoles");
const vm = root ? root.dataset.vm : null;
const api = window.virtkit.api;

function wsUrl(path) {
  const url = new URL("api/v1/" + path, document.baseURI);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  return url.href;
}

async function ticket(kind) {
  const { data } = await api("POST", `api/v1/vms/${encodeURIComponent(vm)}/console/ticket`, { kind });
  return data;
}

function say(kind, text, state) {
  const line = document.getElementById(`${kind}-status`);
  line.textContent = text;
  line.dataset.state = state;
}

// -- VNC ------------------------------------------------------------------------------------

let rfb = null;

async function connectVnc() {
  disconnectVnc();
  const screen = document.getElementById("vnc-screen");
  say("vnc", "Connecting…", "connecting");
  let t;
  try {
    t = await ticket("vnc");
  } catch (err) {
    say("vnc", err.message, "error");
    return;
  }
  const client = new RFB(screen, wsUrl(t.path), {
    credentials: { password: t.password },
    wsProtocols: ["binary"],
  });
  rfb = client;
  client.scaleViewport = true;
  client.background = "#111";
  client.addEventListener("connect", () => say("vnc", `Connected to ${vm}.`, "connected"));
  client.addEventListener("credentialsrequired", () => client.sendCredentials({ password: t.password }));
  client.addEventListener("securityfailure", (e) =>
    say("vnc", `Refused: ${e.detail.reason || "authentication failed"}`, "error"));
  client.addEventListener("disconnect", (e) => {
    if (rfb === client) rfb = null;
    say("vnc", e.detail.clean ? "Disconnected." : "The connection was lost (is the VM running?).", "closed");
  });
}

function disconnectVnc() {
  if (rfb) {
    const client = rfb;
    rfb = null;
    client.disconnect();
  }
}

// -- serial ---------------------------------------------------------------------------------

let term = null;
let sock = null;

function terminal() {
  if (term) return term;
  term = new window.Terminal({ cursorBlink: true, scrollback: 5000, fontSize: 14 });
  const fit = new window.FitAddon.FitAddon();
  term.loadAddon(fit);
  term.open(document.getElementById("serial-term"));
  fit.fit();
  window.addEventListener("resize", () => fit.fit());
  const encoder = new TextEncoder();
  term.onData((data) => {
    if (sock && sock.readyState === WebSocket.OPEN) sock.send(encoder.encode(data));
  });
  return term;
}

async function connectSerial(force) {
  disconnectSerial();
  const takeover = root.querySelector("[data-console-takeover]");
  takeover.hidden = true;
  terminal();
  say("serial", "Connecting…", "connecting");
  let t;
  try {
    t = await ticket("serial");
  } catch (err) {
    say("serial", err.message, "error");
    return;
  }
  const ws = new WebSocket(wsUrl(t.path + (force ? "&force=true" : "")), ["binary"]);
  sock = ws;
  ws.binaryType = "arraybuffer";
  ws.onopen = () => {
    say("serial", `Connected to ${vm}'s serial console. Press Enter for a prompt.`, "connected");
    term.focus();
  };
  ws.onmessage = (e) => term.write(typeof e.data === "string" ? e.data : new Uint8Array(e.data));
  ws.onclose = (e) => {
    if (sock === ws) sock = null;
    if (e.code === 4409 && /in use/.test(e.reason)) {
      say("serial", "Another client holds this console.", "busy");
      takeover.hidden = false;
    } else if (e.code >= 4000) {
      say("serial", `Refused: ${e.reason || e.code}`, "error");
    } else {
      say("serial", e.reason ? `Closed: ${e.reason}` : "Disconnected.", "closed");
    }
  };
}

function disconnectSerial() {
  if (sock) {
    const ws = sock;
    sock = null;
    ws.close(1000);
  }
}

// -- tabs and buttons -----------------------------------------------------------------------

function show(kind) {
  for (const tab of root.querySelectorAll("[data-console-tab]")) {
    const on = tab.dataset.consoleTab === kind;
    tab.setAttribute("aria-selected", on ? "true" : "false");
    tab.tabIndex = on ? 0 : -1;
    document.getElementById(`panel-${tab.dataset.consoleTab}`).hidden = !on;
  }
  const connected = kind === "vnc" ? rfb !== null : sock !== null;
  if (!connected) connect(kind);
}

function connect(kind, force) {
  return kind === "vnc" ? connectVnc() : connectSerial(force);
}

function running() {
  const live = document.getElementById("vm-live");
  return !live || ["running", "paused"].includes(live.dataset.state);
}

if (root) {
  root.addEventListener("click", (e) => {
    const b = e.target.closest("button");
    if (!b) return;
    if (b.dataset.consoleTab) show(b.dataset.consoleTab);
    else if (b.dataset.consoleConnect) connect(b.dataset.consoleConnect);
    else if (b.dataset.consoleDisconnect === "vnc") disconnectVnc();
    else if (b.dataset.consoleDisconnect === "serial") disconnectSerial();
    else if ("consoleTakeover" in b.dataset) connectSerial(true);
    else if ("vncCad" in b.dataset && rfb) rfb.sendCtrlAltDel();
  });
  // The arrow keys move between the tabs (the ARIA tabs pattern).
  root.querySelector('[role="tablist"]').addEventListener("keydown", (e) => {
    if (e.key !== "ArrowRight" && e.key !== "ArrowLeft") return;
    const tabs = [...root.querySelectorAll("[data-console-tab]")];
    const i = tabs.indexOf(document.activeElement);
    if (i < 0) return;
    const next = tabs[(i + (e.key === "ArrowRight" ? 1 : tabs.length - 1)) % tabs.length];
    next.focus();
    show(next.dataset.consoleTab);
  });
  // When the VM starts (the event stream re-rendered the page's state), connect the console.
  document.body.addEventListener("htmx:afterSwap", () => {
    const kind = root.querySelector('[aria-selected="true"]').dataset.consoleTab;
    const connected = kind === "vnc" ? rfb !== null : sock !== null;
    if (running() && !connected) connect(kind);
  });
  const first = root.querySelector('[aria-selected="true"]');
  if (first && running()) show(first.dataset.consoleTab);
}

window.virtkitConsole = {
  connect,
  serialText: () => {
    if (!term) return "";
    const buffer = term.buffer.active;
    const lines = [];
    for (let i = 0; i < buffer.length; i++) lines.push(buffer.getLine(i).translateToString(true));
    return lines.join("\n");
  },
};
