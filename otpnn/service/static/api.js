// The service's API as the page uses it: every request carries the token (when there is one)
// in an Authorization header, never in a URL. The live feed is read with fetch() streaming,
// because EventSource cannot send headers.

export class Unauthorized extends Error {}

let token = null; // kept in memory only: a reload asks again

export function setToken(value) {
  token = value || null;
}

function headers(extra = {}) {
  return token ? { ...extra, Authorization: `Bearer ${token}` } : extra;
}

// fetch, with 401 turned into Unauthorized; other errors are the service's {error} message.
export async function request(method, path, body) {
  const init = { method, headers: headers(), cache: "no-store" };
  if (body !== undefined) {
    init.headers = headers({ "Content-Type": "application/json" });
    init.body = JSON.stringify(body);
  }
  const res = await fetch(path, init);
  if (res.status === 401) throw new Unauthorized("missing or wrong token");
  return res;
}

export async function json(method, path, body) {
  const res = await request(method, path, body);
  const data = await res.json().catch(() => ({ error: `HTTP ${res.status}` }));
  if (!res.ok) {
    const err = new Error(data.error || `HTTP ${res.status}`);
    err.status = res.status;
    err.detail = data.detail || [];
    throw err;
  }
  return data;
}

// Save a download that needs the token: fetched, then handed to the browser as a blob.
export async function download(path, filename) {
  const res = await request("GET", path);
  if (!res.ok) {
    const data = await res.json().catch(() => ({}));
    throw new Error(data.error || `HTTP ${res.status}`);
  }
  const url = URL.createObjectURL(await res.blob());
  const a = document.createElement("a");
  a.href = url;
  a.download = filename;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

// Read the SSE stream at `path` until it ends or `signal` aborts; onEvent(name, data) per
// event. Reconnects after a drop, waiting the server's `retry:`; a 401 ends it with onAuth().
export async function follow(path, { onEvent, onState, onAuth, signal }) {
  let retry = 2000;
  while (!signal.aborted) {
    try {
      onState("connecting");
      const res = await fetch(path, { headers: headers(), cache: "no-store", signal });
      if (res.status === 401) {
        onAuth();
        return;
      }
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      onState("live");
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const parsed = parseBlock(block);
          if (parsed.retry) retry = parsed.retry;
          if (parsed.event) onEvent(parsed.event, JSON.parse(parsed.data));
        }
      }
    } catch (e) {
      if (signal.aborted) return;
    }
    onState("reconnecting");
    await new Promise((resolve) => setTimeout(resolve, retry));
  }
}

function parseBlock(block) {
  const out = { event: null, data: "", retry: 0 };
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith(":")) continue; // a comment: keep-alive
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "event") out.event = value;
    else if (field === "data") data.push(value);
    else if (field === "retry") out.retry = Number(value) || 0;
  }
  out.data = data.join("\n");
  if (out.event && !out.data) out.event = null;
  return out;
}
