/**
 * Talking to the service: typed GETs, POSTs with the CSRF token, and the live stream of the
 * overview (server-sent events, with short polling as the fallback when the stream breaks).
 */
import type { OverviewResponse, SessionResponse } from '../../http/admin-types.js';

export class ApiError extends Error {
  constructor(readonly status: number, message: string) {
    super(message);
  }
}

let csrf = '';
export let session: SessionResponse | null = null;

async function read<T>(res: Response): Promise<T> {
  if (res.status === 401) {
    // The session expired: back to the login form (the token is never in a link).
    window.location.assign('/login');
    throw new ApiError(401, 'logged out');
  }
  const text = await res.text();
  const body: unknown = text ? JSON.parse(text) : null;
  if (!res.ok) {
    const message = body && typeof body === 'object' && 'message' in body ? String(body.message) : `HTTP ${res.status}`;
    throw new ApiError(res.status, message);
  }
  return body as T;
}

export async function get<T>(path: string): Promise<T> {
  return read<T>(await fetch(path, { headers: { accept: 'application/json' }, credentials: 'same-origin' }));
}

export async function post<T>(path: string, body: unknown): Promise<T> {
  if (!csrf) await loadSession();
  return read<T>(await fetch(path, {
    method: 'POST',
    credentials: 'same-origin',
    headers: { 'content-type': 'application/json', accept: 'application/json', 'x-csrf-token': csrf },
    body: JSON.stringify(body),
  }));
}

export async function loadSession(): Promise<SessionResponse> {
  session = await get<SessionResponse>('/api/session');
  csrf = session.csrf;
  return session;
}

export async function logout(): Promise<void> {
  if (!csrf) await loadSession();
  await fetch('/logout', { method: 'POST', credentials: 'same-origin', headers: { 'x-csrf-token': csrf } });
  window.location.assign('/login');
}

/** Query string from a filter object, leaving out empty values. */
export function qs(params: Record<string, string | number | undefined | null>): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') q.set(k, String(v));
  const s = q.toString();
  return s ? `?${s}` : '';
}

// ---------- live overview ----------

type Listener = (o: OverviewResponse) => void;
const listeners = new Set<Listener>();
let latest: OverviewResponse | null = null;
let liveState: 'connecting' | 'live' | 'polling' = 'connecting';
const stateListeners = new Set<(s: typeof liveState) => void>();

export function currentOverview(): OverviewResponse | null {
  return latest;
}

export function onOverview(fn: Listener): () => void {
  listeners.add(fn);
  if (latest) fn(latest);
  return () => listeners.delete(fn);
}

export function onLiveState(fn: (s: typeof liveState) => void): () => void {
  stateListeners.add(fn);
  fn(liveState);
  return () => stateListeners.delete(fn);
}

function publish(o: OverviewResponse): void {
  latest = o;
  for (const fn of listeners) fn(o);
}

function setLive(s: typeof liveState): void {
  liveState = s;
  for (const fn of stateListeners) fn(s);
}

/** Server-sent events; if they fail (a proxy that buffers), poll every 3 s instead. */
export function startLive(): void {
  let failures = 0;
  let timer: number | undefined;
  const poll = async () => {
    try {
      publish(await get<OverviewResponse>('/api/overview'));
    } catch {
      // the next poll tries again
    }
    timer = window.setTimeout(poll, 3000);
  };
  const connect = () => {
    const es = new EventSource('/api/stream');
    es.addEventListener('overview', (e) => {
      failures = 0;
      setLive('live');
      publish(JSON.parse((e as MessageEvent<string>).data) as OverviewResponse);
    });
    es.onerror = () => {
      failures++;
      if (failures >= 3) {
        es.close();
        setLive('polling');
        if (timer === undefined) void poll();
      }
    };
  };
  connect();
}
