// The JSON API client. The bearer token lives in sessionStorage only: it is gone when the tab closes,
// and it is never put in a cookie, so the browser never sends it by itself (docs/dashboard.md).
const KEY = "cronraft.token";

export function token() {
  return sessionStorage.getItem(KEY) || "";
}

export function setToken(value) {
  if (value) sessionStorage.setItem(KEY, value);
  else sessionStorage.removeItem(KEY);
}

export class ApiError extends Error {
  constructor(status, error) {
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.code = error.code || "";
    this.field = error.field || null;
    this.leader = error.leader || null;
  }
}

function headers(extra) {
  const out = { Accept: "application/json", ...extra };
  const t = token();
  if (t) out.Authorization = `Bearer ${t}`;
  return out;
}

// A 401 on any call but the sign-in check sends the page back to the sign-in form (app.js).
async function answer(resp, path) {
  let body = null;
  try {
    body = await resp.json();
  } catch (e) {
    body = null;
  }
  if (!resp.ok) {
    const error = body && body.error ? body.error : { code: "http", message: `HTTP ${resp.status} ${resp.statusText}` };
    const err = new ApiError(resp.status, error);
    if (resp.status === 401 && path !== "/whoami") window.dispatchEvent(new CustomEvent("cronraft-unauthenticated", { detail: err }));
    throw err;
  }
  return body;
}

export async function get(path, params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (v === undefined || v === null || v === "" || v === false) continue;
    for (const item of Array.isArray(v) ? v : [v]) q.append(k, String(item));
  }
  const qs = q.toString();
  return answer(await fetch(`/api/v1${path}${qs ? `?${qs}` : ""}`, { headers: headers(), cache: "no-store" }), path);
}

// A write carries a request id made once per action, so that a retry is answered, not applied twice.
export function requestId() {
  const b = new Uint8Array(12);
  crypto.getRandomValues(b);
  return "dash-" + Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

export async function post(path, body) {
  const payload = { request_id: requestId(), ...(body || {}) };
  return answer(
    await fetch(`/api/v1${path}`, {
      method: "POST",
      headers: headers({ "Content-Type": "application/json" }),
      body: JSON.stringify(payload),
      cache: "no-store",
    }),
    path,
  );
}
