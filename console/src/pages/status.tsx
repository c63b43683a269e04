// Status (public): the recorder's health and lag as ingestd reports it, and, signed in,
// each series with its markets' coverage and gaps.
import { useEffect, useState } from "preact/hooks";
import { get, Market } from "../api";
import { when } from "../format";

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

interface DayCondition {
  ticker: string;
  date: string;
  condition: string;
  total_gap_duration?: string;
}

function ConditionsRow(props: { series: string; markets: number }) {
  const [rows, setRows] = useState<DayCondition[] | null>(null);
  useEffect(() => {
    void get<{ conditions: DayCondition[] }>(`/v1/conditions?series_ticker=${encodeURIComponent(
      props.series)}&page_size=1000`).then((r) => setRows(r.conditions ?? [])).catch(() => setRows([]));
  }, [props.series]);
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

export function StatusPage() {
  const [incidents, setIncidents] = useState<Incident[] | null>(null);
  const [health, setHealth] = useState<Health | null>(null);
  const [healthError, setHealthError] = useState("");
  const [markets, setMarkets] = useState<Market[] | null>(null);
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
    void get<{ markets: Market[] }>("/v1/markets?page_size=500").then((r) => setMarkets(r.markets ?? []))
      .catch(() => setMarkets(null));
    return () => clearInterval(timer);
  }, []);
  const bySeries = new Map<string, Market[]>();
  for (const market of markets ?? []) {
    bySeries.set(market.series_ticker, [...(bySeries.get(market.series_ticker) ?? []), market]);
  }
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
        {markets === null ? <p class="muted">Sign in to see each series' markets and their
          condition today.</p> : (
          <table data-testid="coverage"><thead><tr><th>Series</th><th class="num">Markets</th>
            <th class="num">No gap so far</th><th class="num">With gaps</th>
            <th class="num">Missing</th><th class="num">Gap time today</th></tr></thead>
            <tbody>{[...bySeries.entries()].sort().map(([series, list]) => (
              <ConditionsRow series={series} markets={list.length} />))}</tbody></table>
        )}
      </div>
    </section>
  );
}
