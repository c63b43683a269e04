// Charts from well-kept libraries: uPlot (usage bars, depth) and TradingView's
// lightweight-charts (candles). Values are exact strings until here; only the plotted
// coordinates are numbers.
import { createChart, CandlestickSeries, UTCTimestamp } from "lightweight-charts";
import { useEffect, useRef } from "preact/hooks";
import uPlot from "uplot";
import { Candle, Level, UsageRow } from "./api";
import { scaled, short } from "./format";

function usePlot(make: (el: HTMLDivElement) => { destroy(): void }, deps: unknown[]) {
  const ref = useRef<HTMLDivElement>(null);
  useEffect(() => {
    if (!ref.current) return;
    const chart = make(ref.current);
    return () => chart.destroy();
  }, deps);
  return ref;
}

const COLORS = ["#2563eb", "#16a34a", "#d97706", "#dc2626", "#7c3aed", "#0891b2", "#be185d"];

export function UsageChart(props: { rows: UsageRow[] }) {
  const ref = usePlot((el) => {
    // every one of the last 30 UTC days, so a quiet day reads as zero, not as missing
    const today = Date.parse(new Date().toISOString().slice(0, 10));
    const days = Array.from({ length: 30 }, (_, i) =>
      new Date(today - (29 - i) * 86_400_000).toISOString().slice(0, 10));
    const methods = [...new Set(props.rows.map((r) => short(r.method)))].sort();
    const x = days.map((d) => Date.parse(`${d}T00:00:00Z`) / 1000);
    const bars = uPlot.paths.bars!({ size: [0.7, 24] });
    const calls = methods.map((m) => days.map((d) => props.rows
      .filter((r) => r.day === d && short(r.method) === m)
      .reduce((sum, r) => sum + Number(r.calls), 0)));
    // Stacked: series i is the sum of methods 0..i; drawn tallest first so each method's
    // slice shows in its own colour on top of the ones below it.
    const stacked = calls.map((_, i) => days.map((_, d) =>
      calls.slice(0, i + 1).reduce((sum, c) => sum + c[d], 0))).reverse();
    const order = [...methods].reverse();
    const creditsPerDay = days.map((d) => props.rows.filter((r) => r.day === d)
      .reduce((sum, r) => sum + Number(r.credits), 0));
    return new uPlot({
      width: Math.max(300, el.clientWidth), height: 240,
      series: [{}, ...order.map((m, i) => ({ label: m, stroke: COLORS[(order.length - 1 - i) % 7],
        fill: COLORS[(order.length - 1 - i) % 7], width: 1, paths: bars, points: { show: false },
        value: (_u: uPlot, _v: number | null, _s: number, idx: number | null) =>
          idx === null ? "--" : String(calls[order.length - 1 - i][idx]) })),
        { label: "credits", stroke: "#111827", dash: [4, 4], scale: "credits" }],
      axes: [{}, { label: "calls (stacked by method)" }, { side: 1, scale: "credits", label: "credits",
        grid: { show: false } }],
      scales: { x: { time: true } },
    }, [x, ...stacked, creditsPerDay], el);
  }, [props.rows]);
  return <div class="chart" ref={ref} data-testid="usage-chart" />;
}

export function DepthChart(props: { yes: Level[]; no: Level[] }) {
  const ref = usePlot((el) => {
    // Cumulative size from the best price outward, per side, on the YES price axis:
    // a NO bid at p is an offer to sell YES at 1 − p (PROTOCOL.md §4).
    const side = (levels: Level[], flip: boolean) => {
      let total = 0n;
      return levels.map((l) => {
        total += scaled(l.quantity, 2);
        const price = scaled(l.price, 4);
        return [Number(flip ? 10_000n - price : price) / 10_000, Number(total) / 100] as const;
      });
    };
    const bids = side(props.yes, false);
    const asks = side(props.no, true);
    const xs = [...new Set([...bids, ...asks].map(([p]) => p))].sort((a, b) => a - b);
    const at = (points: readonly (readonly [number, number])[]) =>
      xs.map((x) => points.find(([p]) => p === x)?.[1] ?? null);
    return new uPlot({
      width: Math.max(300, el.clientWidth), height: 220,
      series: [{ label: "YES price" },
        { label: "YES bids (cumulative)", stroke: "#16a34a", fill: "rgba(22,163,74,.15)",
          paths: uPlot.paths.stepped!({ align: 1 }) },
        { label: "YES asks = NO bids (cumulative)", stroke: "#dc2626",
          fill: "rgba(220,38,38,.15)", paths: uPlot.paths.stepped!({ align: -1 }) }],
      scales: { x: { time: false } },
      axes: [{ label: "YES price ($)" }, { label: "contracts" }],
    }, [xs, at(bids), at(asks)], el);
  }, [props.yes, props.no]);
  return <div class="chart" ref={ref} data-testid="depth-chart" />;
}

export function CandleChart(props: { candles: Candle[] }) {
  const ref = usePlot((el) => {
    const chart = createChart(el, { height: 240, width: Math.max(300, el.clientWidth),
      layout: { attributionLogo: false }, timeScale: { timeVisible: true } });
    const series = chart.addSeries(CandlestickSeries, { priceFormat: { type: "price",
      precision: 4, minMove: 0.0001 } });
    series.setData(props.candles.map((c) => ({
      time: (Date.parse(c.start_time) / 1000) as UTCTimestamp,
      open: Number(c.open), high: Number(c.high), low: Number(c.low), close: Number(c.close),
    })));
    chart.timeScale().fitContent();
    return { destroy: () => chart.remove() };
  }, [props.candles]);
  return <div class="chart" ref={ref} data-testid="candle-chart" />;
}
