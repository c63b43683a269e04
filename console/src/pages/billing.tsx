// Billing: buy a credit pack (Stripe Checkout; back here once the webhook has credited
// the account), plan and cap, and the ledger with its running balance.
import { useEffect, useState } from "preact/hooks";
import { Account, CreditPack, get, LedgerEntry, post } from "../api";
import { credits, dollars, when } from "../format";

export function BillingPage() {
  const [account, setAccount] = useState<Account | null>(null);
  const [packs, setPacks] = useState<CreditPack[]>([]);
  const [ledger, setLedger] = useState<LedgerEntry[]>([]);
  const [error, setError] = useState("");
  const returned = location.pathname === "/billing/success";
  const load = async () => {
    setAccount((await get<{ account: Account }>("/v1/account")).account);
    setLedger((await get<{ entries: LedgerEntry[] }>("/v1/account/ledger?page_size=100")).entries ?? []);
  };
  useEffect(() => {
    void load();
    void get<{ packs: CreditPack[] }>("/v1/billing/packs").then((r) => setPacks(r.packs ?? []));
    if (!returned) return;
    const timer = setInterval(() => void load(), 1000);  // until the webhook has landed
    setTimeout(() => clearInterval(timer), 30_000);
    return () => clearInterval(timer);
  }, []);
  const buy = async (pack: string) => {
    setError("");
    try {
      const session = await post<{ url: string }>("/v1/billing/checkout", {
        pack, success_url: `${location.origin}/billing/success`,
        cancel_url: `${location.origin}/billing`,
      });
      location.assign(session.url);
    } catch (caught) {
      setError(String((caught as Error).message));
    }
  };
  return (
    <section>
      <h1>Billing</h1>
      {returned && <div class="card ok">Thank you: the credits appear below as soon as Stripe
        confirms the payment.</div>}
      <div class="tiles">
        <div class="tile"><span>Balance</span><strong data-testid="balance">
          {account ? credits(account.balance_credits) : "…"}</strong><small>credits</small></div>
        <div class="tile"><span>Plan</span><strong>{account?.plan ?? "…"}</strong>
          <small>{account?.plan === "payg" ? "pay as you go: usage billed monthly" : "prepaid credits"}</small></div>
        <div class="tile"><span>Spending cap</span><strong data-testid="cap">
          {account ? (account.spending_cap_credits === "0" ? "none" : credits(account.spending_cap_credits)) : "…"}
        </strong><small>credits per month beyond the allowance</small></div>
      </div>
      <form class="card row" onSubmit={async (event) => {
        event.preventDefault();
        const value = new FormData(event.currentTarget as HTMLFormElement).get("cap") as string;
        setError("");
        try {
          const r = await post<{ account: Account }>("/v1/account:setSpendingCap",
            { spending_cap_credits: value || "0" });
          setAccount(r.account);
        } catch (caught) { setError(String((caught as Error).message)); }
      }}>
        <label>Monthly spending cap (credits; 0 for none)
          <input name="cap" inputMode="numeric" pattern="[0-9]*" placeholder="50000" /></label>
        <button type="submit">Set cap</button>
      </form>
      <div class="card">
        <h2>Buy credits</h2>
        <div class="packs">{packs.map((pack) => (
          <button class="pack" data-pack={pack.pack_id} onClick={() => buy(pack.pack_id)}>
            <strong>{credits(pack.credits)} credits</strong><span>{dollars(pack.price_cents)}</span>
          </button>))}</div>
        {error && <p class="error">{error}</p>}
        <p class="small muted">Payments are handled by Stripe Checkout; cards, invoices and
          receipts are in <button class="link" data-testid="portal" onClick={async () => {
            try {
              const portal = await post<{ url: string }>("/v1/billing/portal",
                { return_url: `${location.origin}/billing` });
              location.assign(portal.url);
            } catch (caught) { setError(String((caught as Error).message)); }
          }}>Stripe's customer portal</button>.</p>
      </div>
      <div class="card">
        <h2>Ledger</h2>
        <table data-testid="ledger"><thead><tr><th>Time</th><th>Kind</th><th>Reason</th>
          <th class="num">Credits</th><th class="num">Balance</th></tr></thead>
          <tbody>{ledger.map((entry) => (
            <tr><td>{when(entry.create_time)}</td><td>{entry.kind}</td><td>{entry.reason}</td>
              <td class="num">{entry.credits.startsWith("-") ? "" : "+"}{credits(entry.credits)}</td>
              <td class="num">{credits(entry.balance_after)}</td></tr>))}</tbody></table>
      </div>
    </section>
  );
}
