// Status (public, no sign-in): the recorder's health and lag as ingestd reports it, the
// incidents of the week, each recorded series (GET /v1/status/series) with its markets'
// condition today, and every open or recent gap of a market. Conditions come from
// GET /v1/conditions (public, free), one request per series for yesterday and today
// (UTC), the same rows for both tables.
import { useEffect, useState } from "preact/hooks";
import { get, query } from "../api";
import { duration, millis, when } from "../format";

interface Health {
  feed_connected?: boolean;
  connections?: number;
  connections_up?: number;
  writer?: string;
  spill_bytes?: number;
  markets_recorded?: number;
  markets_wanted?: number;
  markets_left_out?: number;
  secs_since_last_message?: number | null;
  exchange_lag_secs?: (number | null)[];
  exchange_lag_growing?: boolean;
}

interface Incident {
  detect_time: string;
  start_time: string;
  end_time?: string;
  reason: string;
  market_count: string;
  tickers: string[];
}

interface GapInterval {
  start_time: string;
  end_time: string;
  reason: string;
  open?: boolean;
}

interface DayCondition {
  ticker: string;
  date: string;
  condition: string;
  gaps?: GapInterval[];
  total_gap_duration?: string;
}

const DAY_MS = 86_400_000;
const RECENT_MS = DAY_MS; // "recent gaps": healed within the last 24 h
const MAX_GAP_ROWS = 100;

const utcDate = (ms: number) => new Date(ms).toISOString().slice(0, 10);

// Every series ktape records, page after page (public, no key).
async function recordedSeries(): Promise<string[]> {
  const out: string[] = [];
  let token = "";
  do {
    const page = await get<{ series?: { series_ticker: string }[]; next_page_token?: string }>(
      `/v1/status/series?page_size=1000${token ? `&page_token=${encodeURIComponent(token)}` : ""}`);
    out.push(...(page.series ?? []).map((s) => s.series_ticker));
    token = page.next_page_token ?? "";
  } while (token);
  return out;
}

// Every condition of a series' markets on the UTC days [start, end], page after page.
async function seriesConditions(series: string, start: string, end: string): Promise<DayCondition[]> {
  const rows: DayCondition[] = [];
  let token = "";
  do {
    const page = await get<{ conditions?: DayCondition[]; next_page_token?: string }>(
      `/v1/conditions${query({ series_ticker: series, start_date: start, end_date: end,
                               page_size: 1000, page_token: token })}`);
    rows.push(...(page.conditions ?? []));
    token = page.next_page_token ?? "";
  } while (token);
  return rows;
}

interface Gap {
  ticker: string;
  start: number;
  end: number; // for an open gap: when the API answered (now, or the day's end)
  open: boolean;
  reason: string;
}

// The markets' gaps from their daily spans. The API clips spans to UTC days, so a span
// that ends at midnight and the next day's span that starts there are one gap. Spans
// before recording of a market began (not_recorded) are coverage, not gaps.
function gapsOf(rows: DayCondition[]): Gap[] {
  const byTicker = new Map<string, Gap[]>();
  for (const row of [...rows].sort((a, b) => a.date.localeCompare(b.date))) {
    const gaps = byTicker.get(row.ticker) ?? [];
    for (const span of row.gaps ?? []) {
      if (span.reason === "not_recorded") continue;
      const start = millis(span.start_time);
      const end = millis(span.end_time);
      const last = gaps[gaps.length - 1];
      if (last && last.end === start && start % DAY_MS === 0) {
        last.end = end;
        last.open = Boolean(span.open);
      } else {
        gaps.push({ ticker: row.ticker, start, end, open: Boolean(span.open), reason: span.reason });
      }
    }
    byTicker.set(row.ticker, gaps);
  }
  // Open gaps first, then the newest: what a status page is read for (and a burst of
  // older gaps never hides a fresh one behind MAX_GAP_ROWS).
  return [...byTicker.values()].flat().sort(
    (a, b) => Number(b.open) - Number(a.open) || b.start - a.start || a.ticker.localeCompare(b.ticker));
}

function ConditionsRow(props: { series: string; markets: number; today?: DayCondition[] }) {
  const rows = props.today;
  // today is PENDING (not closed): split by whether it has had a gap so far
  const gapOf = (r: DayCondition) => parseFloat(r.total_gap_duration ?? "0s");
  const missing = (rows ?? []).filter((r) => r.condition === "DATA_CONDITION_MISSING").length;
  const clean = (rows ?? []).filter((r) => r.condition !== "DATA_CONDITION_MISSING" && gapOf(r) === 0).length;
  const gapSecs = (rows ?? []).reduce((sum, r) => sum + gapOf(r), 0);
  return (
    <tr><td>{props.series}</td><td class="num">{props.markets}</td>
      <td class="num">{rows ? clean : "…"}</td>
      <td class="num">{rows ? rows.length - clean - missing : "…"}</td>
      <td class="num">{rows ? missing : "…"}</td>
      <td class="num">{rows ? `${gapSecs.toFixed(1)} s` : "…"}</td></tr>
  );
}

function GapsTable(props: { gaps: Gap[] }) {
  const now = Date.now();
  const shown = props.gaps.slice(0, MAX_GAP_ROWS);
  if (shown.length === 0) {
    return <p class="muted" data-testid="gaps">No open gap, and none healed in the last 24 hours.</p>;
  }
  return (
    <>
      <table data-testid="gaps"><thead><tr><th>Market</th><th>From</th><th>Until</th>
        <th class="num">Duration</th><th>Reason</th></tr></thead>
        <tbody>{shown.map((g) => (
          <tr><td><code>{g.ticker}</code></td><td>{when(new Date(g.start).toISOString())}</td>
            <td>{g.open ? <span class="badge gap">open</span> : when(new Date(g.end).toISOString())}</td>
            <td class="num">{g.open ? `${duration(now - g.start)} so far` : duration(g.end - g.start)}</td>
            <td>{g.reason}</td></tr>))}</tbody></table>
      {props.gaps.length > shown.length &&
        <p class="muted">and {props.gaps.length - shown.length} more (GET /v1/conditions lists them all)</p>}
    </>
  );
}

export function StatusPage() {
  const [incidents, setIncidents] = useState<Incident[] | null>(null);
  const [health, setHealth] = useState<Health | null>(null);
  const [healthError, setHealthError] = useState("");
  const [recorded, setRecorded] = useState<string[] | null>(null);
  useEffect(() => {
    const load = async () => {
      try {
        const response = await fetch("/v1/status/ingest", { headers: { Accept: "application/json" } });
        setHealth(await response.json());
        setHealthError(response.ok ? "" : "degraded");
      } catch {
        setHealthError("the recorder is not answering");
      }
    };
    void load();
    const timer = setInterval(load, 5000);
    const weekAgo = new Date(Date.now() - 7 * 86_400_000).toISOString();
    void get<{ incidents: Incident[] }>(`/v1/incidents?start_time=${weekAgo}`)
      .then((r) => setIncidents(r.incidents ?? [])).catch(() => setIncidents([]));
    void recordedSeries().then(setRecorded).catch(() => setRecorded(null));
    return () => clearInterval(timer);
  }, []);
  const [conditions, setConditions] = useState<Record<string, DayCondition[]>>({});
  const [unread, setUnread] = useState<string[]>([]); // series whose conditions failed
  const [today, setToday] = useState(() => utcDate(Date.now()));
  useEffect(() => {
    if (!recorded) return;
    const now = Date.now();
    setToday(utcDate(now));
    for (const series of recorded) {
      void seriesConditions(series, utcDate(now - DAY_MS), utcDate(now))
        .then((rows) => setConditions((known) => ({ ...known, [series]: rows })))
        .catch(() => {
          setUnread((known) => [...known, series]);
          setConditions((known) => ({ ...known, [series]: [] }));
        });
    }
  }, [recorded]);
  // each series' markets: those with a condition row (open or recorded) in the two days
  const bySeries = new Map<string, string[]>();
  for (const series of recorded ?? []) {
    bySeries.set(series, [...new Set((conditions[series] ?? []).map((c) => c.ticker))]);
  }
  const loaded = Object.keys(conditions).length;
  const since = Date.now() - RECENT_MS;
  const gaps = gapsOf(Object.values(conditions).flat())
    .filter((g) => g.open || g.end > since)
    .sort((a, b) => Number(b.open) - Number(a.open) || b.start - a.start || a.ticker.localeCompare(b.ticker));
  const ok = health?.feed_connected && health.writer === "committing";
  return (
    <section>
      <h1>Data status</h1>
      <div class="card">
        <h2>Recorder <span class={`badge ${ok ? "continuous" : "gap"}`} data-testid="ingest-state">
          {ok ? "recording" : healthError || "degraded"}</span></h2>
        {health && (
          <dl class="facts">
            <dt>Connections up</dt><dd>{health.connections_up} of {health.connections}</dd>
            <dt>Markets recorded</dt><dd>{health.markets_recorded} of {health.markets_wanted}
              {health.markets_left_out ? ` (${health.markets_left_out} not held by Kalshi yet)` : ""}</dd>
            <dt>Last message</dt><dd>{health.secs_since_last_message ?? "—"} s ago</dd>
            <dt>Exchange → receive lag</dt><dd>{(health.exchange_lag_secs ?? [])
              .map((l) => (l === null ? "—" : `${l.toFixed(3)} s`)).join(", ") || "—"}
              {health.exchange_lag_growing ? " (growing)" : ""}</dd>
            <dt>Storage</dt><dd>{health.writer}{health.spill_bytes ? `, ${health.spill_bytes} bytes spilled` : ""}</dd>
          </dl>
        )}
      </div>
      <div class="card">
        <h2>Incidents (7 days)</h2>
        {incidents === null ? <p class="muted">Loading…</p> : incidents.length === 0 ?
          <p class="muted" data-testid="incidents">No incident: no reconnect, restart or lost
            subscription put markets in a gap.</p> : (
          <table data-testid="incidents"><thead><tr><th>Detected</th><th>Reason</th>
            <th class="num">Markets</th><th>Gap from</th><th>Healed</th></tr></thead>
            <tbody>{incidents.map((i) => (<tr><td>{when(i.detect_time)}</td><td>{i.reason}</td>
              <td class="num">{i.market_count}</td><td>{when(i.start_time)}</td>
              <td>{i.end_time ? when(i.end_time) : "still open"}</td></tr>))}</tbody></table>
        )}
      </div>
      <div class="card">
        <h2>Today's data condition by series</h2>
        {recorded === null ? <p class="muted">The list of recorded series is not available
          right now.</p> : (
          <table data-testid="coverage"><thead><tr><th>Series</th><th class="num">Markets</th>
            <th class="num">No gap so far</th><th class="num">With gaps</th>
            <th class="num">Missing</th><th class="num">Gap time today</th></tr></thead>
            <tbody>{[...bySeries.entries()].sort().map(([series, list]) => (
              <ConditionsRow series={series} markets={list.length}
                today={conditions[series]?.filter((r) => r.date === today)} />))}</tbody></table>
        )}
      </div>
      <div class="card">
        <h2>Open and recent gaps (24 h)</h2>
        {recorded === null ? <p class="muted">The list of recorded series is not available
          right now.</p> : loaded < bySeries.size ? <p class="muted">Loading…</p> :
          <GapsTable gaps={gaps} />}
        {unread.length > 0 && <p class="muted">The conditions of {[...unread].sort().join(", ")} could not
          be read: their gaps are not listed.</p>}
      </div>
    </section>
  );
}
