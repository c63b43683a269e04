// Status (public): the recorder's health and lag as ingestd reports it, and, signed in,
// each series with its markets' coverage and gaps.
import { useEffect, useState } from "preact/hooks";
import { get, Market } from "../api";

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

export function StatusPage() {
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
        <h2>Coverage by series</h2>
        {markets === null ? <p class="muted">Sign in to see each series' coverage and gaps.</p> : (
          <table data-testid="coverage"><thead><tr><th>Series</th><th class="num">Markets</th>
            <th class="num">Open</th><th class="num">Closed or settled</th></tr></thead>
            <tbody>{[...bySeries.entries()].sort().map(([series, list]) => {
              const open = list.filter((m) => m.status === "active" || m.status === "open").length;
              return <tr><td>{series}</td><td class="num">{list.length}</td>
                <td class="num">{open}</td><td class="num">{list.length - open}</td></tr>;
            })}</tbody></table>
        )}
      </div>
    </section>
  );
}
