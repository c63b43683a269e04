// Overview: balance, free allowance left, plan and cap; calls and credits per day for 30
// days split by method (uPlot); the latest usage rows.
import { useEffect, useState } from "preact/hooks";
import { Account, get, query, UsageRow } from "../api";
import { UsageChart } from "../charts";
import { credits, short, when } from "../format";

interface RecentCall {
  serve_time: string;
  method: string;
  ticker: string;
  key_id: string;
  credits: string;
  in_gap: boolean;
}

export function Overview() {
  const [account, setAccount] = useState<Account | null>(null);
  const [usage, setUsage] = useState<UsageRow[]>([]);
  const [calls, setCalls] = useState<RecentCall[]>([]);
  useEffect(() => {
    void get<{ account: Account }>("/v1/account").then((r) => setAccount(r.account));
    const start = new Date(Date.now() - 29 * 86_400_000);
    start.setUTCHours(0, 0, 0, 0);
    void get<{ usage: UsageRow[] }>(`/v1/account/usage${query({ start_time: start.toISOString() })}`)
      .then((r) => setUsage(r.usage ?? []));
    void get<{ calls: RecentCall[] }>("/v1/account/calls?page_size=20")
      .then((r) => setCalls(r.calls ?? []));
  }, []);
  if (!account) return <div class="loading">Loading…</div>;
  return (
    <section>
      <h1>Overview</h1>
      <div class="tiles">
        <div class="tile"><span>Balance</span><strong data-testid="balance">
          {credits(account.balance_credits)}</strong><small>credits, allowance included</small></div>
        <div class="tile"><span>Free allowance left</span>
          <strong>{credits(account.free_allowance_remaining)}</strong><small>this month</small></div>
        <div class="tile"><span>Plan</span><strong>{account.plan}</strong>
          <small>{account.state.replace("ACCOUNT_STATE_", "").toLowerCase()}</small></div>
        <div class="tile"><span>Spending cap</span>
          <strong>{account.spending_cap_credits === "0" ? "none" : credits(account.spending_cap_credits)}</strong>
          <small>{credits(account.spent_this_month_credits)} spent this month</small></div>
      </div>
      <div class="card">
        <h2>Calls and credits per day (30 days)</h2>
        {usage.length ? <UsageChart rows={usage} /> : <p class="muted">No calls yet.</p>}
      </div>
      <div class="card">
        <h2>Last calls</h2>
        {calls.length === 0 ? <p class="muted">No calls yet.</p> : (
          <table data-testid="last-calls"><thead><tr><th>Time</th><th>Method</th><th>Market</th>
            <th>Key</th><th class="num">Credits</th><th></th></tr></thead>
            <tbody>{calls.map((call) => (
              <tr><td>{when(call.serve_time)}</td><td>{short(call.method)}</td><td>{call.ticker}</td>
                <td><code>{call.key_id}</code></td><td class="num">{call.credits}</td>
                <td>{call.in_gap ? "in a gap (refundable)" : ""}</td></tr>))}</tbody></table>
        )}
      </div>
    </section>
  );
}
