// Playground: find a market, then its book at any instant (picker and a slider over its
// coverage) as a ladder and a depth chart with the continuity badge, candles, trades,
// the deltas around that instant (gaps highlighted) and the live stream. Each panel
// shows the same call as curl and as Python. Calls are metered to the signed-in account.
import { useEffect, useState } from "preact/hooks";
import { Candle, Delta, get, Level, Market, Orderbook, query, Trade } from "../api";
import { CandleChart, DepthChart } from "../charts";
import { continuityLabel, unscaled, scaled, when } from "../format";

function Snippet(props: { path: string; python: string }) {
  return (
    <details class="snippet"><summary>curl · Python</summary>
      <pre>{`curl -H "Authorization: Bearer $KTAPE_API_KEY" '${location.origin}${props.path}'`}</pre>
      <pre>{`from ktape_client import Client\nclient = Client()\n${props.python}`}</pre>
    </details>
  );
}

function Ladder(props: { title: string; levels: Level[]; testid: string }) {
  return (
    <table class="ladder" data-testid={props.testid}>
      <thead><tr><th colSpan={2}>{props.title}</th></tr>
        <tr><th class="num">Price</th><th class="num">Contracts</th></tr></thead>
      <tbody>{props.levels.slice(0, 15).map((l) => (
        <tr><td class="num">{l.price}</td><td class="num">{l.quantity}</td></tr>))}</tbody>
    </table>
  );
}

function Badge(props: { book: Orderbook }) {
  const c = props.book.continuity;
  const label = continuityLabel(c.status);
  return (
    <span class={`badge ${label.toLowerCase()}`} data-testid="continuity">
      {label}{c.since ? ` since ${when(c.since)}` : ""}
      {c.gap_start_time ? ` · gap ${when(c.gap_start_time)} → ${when(c.gap_end_time)}` : ""}
      {c.reason ? ` (${c.reason})` : ""}
    </span>
  );
}

function toLocalInput(iso: string): string {
  return iso.slice(0, 19);
}

export function Playground() {
  const [filters, setFilters] = useState({ series_ticker: "", event_ticker: "", status: "" });
  const [markets, setMarkets] = useState<Market[]>([]);
  const [market, setMarket] = useState<Market | null>(null);
  const [at, setAt] = useState(new Date().toISOString());
  const [book, setBook] = useState<Orderbook | null>(null);
  const [candles, setCandles] = useState<Candle[]>([]);
  const [trades, setTrades] = useState<Trade[]>([]);
  const [deltas, setDeltas] = useState<Delta[]>([]);
  const [live, setLive] = useState<string[]>([]);
  const [error, setError] = useState("");

  const search = async () => {
    setError("");
    try {
      const found = await get<{ markets: Market[] }>(`/v1/markets${query({ ...filters, page_size: 50 })}`);
      setMarkets(found.markets ?? []);
    } catch (caught) { setError((caught as Error).message); }
  };
  useEffect(() => { void search(); }, []);

  const open = async (ticker: string) => {
    const found = await get<{ market: Market }>(`/v1/markets/${ticker}`);
    setMarket(found.market);
    setAt(new Date().toISOString());
    setLive([]);
  };
  const ticker = market?.ticker;
  useEffect(() => {
    if (!ticker) return;
    const at_ = at;
    const start = new Date(Date.parse(at_) - 3_600_000).toISOString();
    void get<Orderbook>(`/v1/markets/${ticker}/orderbook${query({ at: at_, depth: 50 })}`)
      .then(setBook).catch((e) => setError(e.message));
    void get<{ candles: Candle[] }>(`/v1/markets/${ticker}/candles${query({
      start_time: start, end_time: at_, interval: "1m" })}`).then((r) => setCandles(r.candles ?? []));
    void get<{ trades: Trade[] }>(`/v1/markets/${ticker}/trades${query({
      start_time: start, end_time: at_, page_size: 20 })}`).then((r) => setTrades(r.trades ?? []));
    void get<{ deltas: Delta[] }>(`/v1/markets/${ticker}/deltas${query({
      start_time: new Date(Date.parse(at_) - 30_000).toISOString(),
      end_time: new Date(Date.parse(at_) + 30_000).toISOString(), page_size: 100 })}`)
      .then((r) => setDeltas(r.deltas ?? []));
  }, [ticker, at]);
  useEffect(() => {
    if (!ticker) return;
    const source = new EventSource(`/v1/markets/${ticker}/orderbook:stream`);
    source.onmessage = (event) => setLive((lines) => [event.data, ...lines].slice(0, 20));
    return () => source.close();
  }, [ticker]);

  const first = market?.coverage?.first_recorded_time;
  const last = market?.coverage?.last_recorded_time ?? new Date().toISOString();
  const span = first ? [Date.parse(first), Math.max(Date.parse(last), Date.now())] : null;
  return (
    <section>
      <h1>Playground</h1>
      <form class="card row" onSubmit={(event) => { event.preventDefault(); void search(); }}>
        <label>Series <input value={filters.series_ticker} placeholder="KXHIGHCHI"
          onInput={(e) => setFilters({ ...filters, series_ticker: e.currentTarget.value })} /></label>
        <label>Event <input value={filters.event_ticker}
          onInput={(e) => setFilters({ ...filters, event_ticker: e.currentTarget.value })} /></label>
        <label>Status <select value={filters.status}
          onChange={(e) => setFilters({ ...filters, status: e.currentTarget.value })}>
          <option value="">any</option><option value="open">open</option>
          <option value="closed">closed</option><option value="settled">settled</option></select></label>
        <button type="submit">Search</button>
      </form>
      {error && <p class="error">{error}</p>}
      <div class="card">
        <table data-testid="markets"><thead><tr><th>Ticker</th><th>Title</th><th>Status</th></tr></thead>
          <tbody>{markets.slice(0, 50).map((m) => (
            <tr class={m.ticker === ticker ? "selected" : ""}>
              <td><button class="link" onClick={() => open(m.ticker)}>{m.ticker}</button></td>
              <td>{m.title}</td><td>{m.status}</td></tr>))}</tbody></table>
      </div>
      {market && (
        <>
          <div class="card">
            <h2>{market.ticker} <small class="muted">{market.title}</small></h2>
            <div class="row">
              <label>Book at (UTC) <input type="datetime-local" step="1" value={toLocalInput(at)}
                onChange={(e) => setAt(new Date(`${e.currentTarget.value}Z`).toISOString())} /></label>
              {span && <input class="slider" type="range" min={span[0]} max={span[1]} step={1000}
                value={Date.parse(at)} aria-label="Instant within coverage"
                onChange={(e) => setAt(new Date(Number(e.currentTarget.value)).toISOString())} />}
              {book && <Badge book={book} />}
            </div>
            <p class="small muted">Recorded from {when(first)} to {when(last)} ·{" "}
              {market.coverage?.gap_count ?? "0"} gaps</p>
            {book && (
              <div class="book">
                <Ladder title="YES bids" levels={book.yes} testid="yes-ladder" />
                <Ladder title="NO bids" levels={book.no} testid="no-ladder" />
                <div class="grow"><DepthChart yes={book.yes} no={book.no} />
                  {book.yes[0] && book.no[0] && <p class="small">Best YES bid {book.yes[0].price} ·
                    implied YES ask {unscaled(10_000n - scaled(book.no[0].price, 4), 4)}</p>}</div>
              </div>
            )}
            <Snippet path={`/v1/markets/${market.ticker}/orderbook?at=${at}`}
                     python={`client.orderbook("${market.ticker}", at="${at}")`} />
          </div>
          <div class="card"><h2>Candles (1m, the hour before)</h2>
            {candles.length ? <CandleChart candles={candles} /> : <p class="muted">No trades in that hour.</p>}
            <Snippet path={`/v1/markets/${market.ticker}/candles?interval=1m`}
                     python={`client.candles("${market.ticker}", interval="1m").to_df()`} /></div>
          <div class="card"><h2>Recent trades</h2>
            <table><thead><tr><th>Time</th><th class="num">YES</th><th class="num">NO</th>
              <th class="num">Contracts</th><th>Taker</th></tr></thead>
              <tbody>{trades.map((t) => (<tr><td>{when(t.ts)}</td><td class="num">{t.yes_price}</td>
                <td class="num">{t.no_price}</td><td class="num">{t.count}</td>
                <td>{t.taker_side.replace("TAKER_SIDE_", "").toLowerCase()}</td></tr>))}</tbody></table>
            <Snippet path={`/v1/markets/${market.ticker}/trades`}
                     python={`client.trades("${market.ticker}").to_df()`} /></div>
          <div class="card"><h2>Changes within 30 s of that instant</h2>
            <table data-testid="deltas"><thead><tr><th>Time</th><th>Kind</th><th class="num">Seq</th>
              <th>Side</th><th class="num">Price</th><th class="num">Δ</th><th class="num">Size after</th></tr></thead>
              <tbody>{deltas.map((d) => (<tr class={d.kind === "DELTA_KIND_GAP" ? "gap" : ""}>
                <td>{when(d.ts)}</td><td>{d.kind.replace("DELTA_KIND_", "").toLowerCase()}
                  {d.gap?.reason ? ` (${d.gap.reason})` : ""}</td><td class="num">{d.seq}</td>
                <td>{d.side.replace("SIDE_", "").toLowerCase()}</td><td class="num">{d.price}</td>
                <td class="num">{d.delta}</td><td class="num">{d.quantity}</td></tr>))}</tbody></table>
            <Snippet path={`/v1/markets/${market.ticker}/deltas`}
                     python={`client.deltas("${market.ticker}").to_df()`} /></div>
          <div class="card"><h2>Live stream</h2>
            <pre class="live" data-testid="live">{live.join("\n") || "waiting for changes…"}</pre>
            <Snippet path={`/v1/markets/${market.ticker}/orderbook:stream`}
                     python={`for event in client.stream("${market.ticker}"):\n    print(event)`} /></div>
        </>
      )}
    </section>
  );
}
