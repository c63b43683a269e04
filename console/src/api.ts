// The console talks to the public API only (REST through Envoy, the session cookie), so
// it can do nothing a customer's code cannot. Writes carry the session's CSRF token.

export interface Session {
  account_id: string;
  email: string;
  csrf_token: string;
  expire_time: string;
}

export class ApiError extends Error {
  constructor(readonly status: number, message: string, readonly reason: string) {
    super(message);
  }
}

let csrf = "";

export function setCsrf(token: string): void {
  csrf = token;
}

export async function api<T>(method: string, path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && csrf) headers["X-CSRF-Token"] = csrf;
  const response = await fetch(path, {
    method,
    headers,
    credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let json: any = {};
  try {
    json = text ? JSON.parse(text) : {};
  } catch {
    json = { message: text };
  }
  if (!response.ok) {
    const reason = json?.details?.find((d: any) => d.reason)?.reason ?? "";
    throw new ApiError(response.status, json?.message ?? response.statusText, reason);
  }
  return json as T;
}

export const get = <T>(path: string) => api<T>("GET", path);
export const post = <T>(path: string, body: unknown = {}) => api<T>("POST", path, body);
export const del = <T>(path: string) => api<T>("DELETE", path);

export function query(params: Record<string, string | number | undefined>): string {
  const parts = Object.entries(params)
    .filter(([, v]) => v !== undefined && v !== "")
    .map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(String(v))}`);
  return parts.length ? `?${parts.join("&")}` : "";
}

// -- shapes (the proto field names, as Envoy prints them) --------------------------------

export interface Account {
  account_id: string;
  name: string;
  state: string;
  plan: string;
  balance_credits: string;
  free_allowance_remaining: string;
  spending_cap_credits: string;
  spent_this_month_credits: string;
  admin: boolean;
  create_time: string;
}

export interface UsageRow {
  account_id: string;
  day: string;
  method: string;
  calls: string;
  credits: string;
}

export interface ApiKey {
  key_id: string;
  prefix: string;
  name: string;
  env: string;
  create_time: string;
  last_used_time?: string;
  revoke_time?: string;
}

export interface LedgerEntry {
  entry_id: string;
  credits: string;
  kind: string;
  reason: string;
  create_time: string;
  balance_after: string;
}

export interface CreditPack {
  pack_id: string;
  credits: string;
  price_cents: string;
}

export interface Level {
  price: string;
  quantity: string;
}

export interface Continuity {
  status: string;
  since?: string;
  gap_start_time?: string;
  gap_end_time?: string;
  reason?: string;
}

export interface Orderbook {
  ticker: string;
  at: string;
  yes: Level[];
  no: Level[];
  seq: string;
  last_change_time?: string;
  continuity: Continuity;
}

export interface Market {
  ticker: string;
  event_ticker: string;
  series_ticker: string;
  status: string;
  title: string;
  coverage?: {
    first_recorded_time?: string;
    last_recorded_time?: string;
    gap_count?: string;
    total_gap_duration?: string;
  };
  volume?: string;
  open_interest?: string;
}

export interface Candle {
  start_time: string;
  open: string;
  high: string;
  low: string;
  close: string;
  volume: string;
  trade_count: string;
}

export interface Trade {
  trade_id: string;
  ts: string;
  yes_price: string;
  no_price: string;
  count: string;
  taker_side: string;
}

export interface Delta {
  kind: string;
  ts: string;
  seq: string;
  side: string;
  price: string;
  delta: string;
  quantity: string;
  gap?: { reason?: string; start_time?: string; end_time?: string };
}
