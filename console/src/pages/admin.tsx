// Admin (admin accounts only; billingd refuses everyone else): accounts, suspend and
// resume, credit grants and the audit trail.
import { useEffect, useState } from "preact/hooks";
import { Account, get, post } from "../api";
import { credits, when } from "../format";

interface AuditEvent {
  event_id: string;
  create_time: string;
  actor_account_id: string;
  action: string;
  target_account_id: string;
}

export function Admin() {
  const [accounts, setAccounts] = useState<Account[]>([]);
  const [audit, setAudit] = useState<AuditEvent[]>([]);
  const [message, setMessage] = useState("");
  const load = async () => {
    setAccounts((await get<{ accounts: Account[] }>("/v1/admin/accounts?page_size=200")).accounts ?? []);
    setAudit((await get<{ events: AuditEvent[] }>("/v1/admin/audit?page_size=50")).events ?? []);
  };
  useEffect(() => { void load(); }, []);
  const act = async (path: string, body: unknown, done: string) => {
    try {
      await post(path, body);
      setMessage(done);
      await load();
    } catch (caught) { setMessage((caught as Error).message); }
  };
  return (
    <section>
      <h1>Admin</h1>
      {message && <p class="card">{message}</p>}
      <div class="card">
        <h2>Accounts</h2>
        <table data-testid="accounts"><thead><tr><th>Name</th><th>Plan</th><th>State</th>
          <th class="num">Balance</th><th>Created</th><th></th></tr></thead>
          <tbody>{accounts.map((a) => (
            <tr><td>{a.name}</td><td>{a.plan}</td>
              <td>{a.state.replace("ACCOUNT_STATE_", "").toLowerCase()}</td>
              <td class="num">{credits(a.balance_credits)}</td><td>{when(a.create_time)}</td>
              <td class="row">
                {a.state === "ACCOUNT_STATE_ACTIVE"
                  ? <button class="danger small" onClick={() => act(
                      `/v1/admin/accounts/${a.account_id}:suspend`, { reason: "console" }, `Suspended ${a.name}`)}>Suspend</button>
                  : <button class="small" onClick={() => act(
                      `/v1/admin/accounts/${a.account_id}:resume`, {}, `Resumed ${a.name}`)}>Resume</button>}
                <button class="small secondary" onClick={() => {
                  const amount = prompt(`Credits to grant ${a.name}`);
                  if (amount && /^\d+$/.test(amount)) {
                    void act(`/v1/admin/accounts/${a.account_id}:grant`, {
                      credits: amount, reason: "console grant",
                      idempotency_key: `console-${Date.now()}` }, `Granted ${amount} to ${a.name}`);
                  }
                }}>Grant</button>
              </td></tr>))}</tbody></table>
      </div>
      <div class="card">
        <h2>Audit trail</h2>
        <table><thead><tr><th>Time</th><th>Actor</th><th>Action</th><th>Target</th></tr></thead>
          <tbody>{audit.map((e) => (<tr><td>{when(e.create_time)}</td><td>{e.actor_account_id}</td>
            <td>{e.action}</td><td>{e.target_account_id}</td></tr>))}</tbody></table>
      </div>
    </section>
  );
}
