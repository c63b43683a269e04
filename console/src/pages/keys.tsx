// API keys: create (dev/prod, name) with a show-once dialog and a copy button; list;
// revoke with confirmation. The secret lives only in the dialog's state and is dropped
// when it closes: never in storage, never in the list.
import { useEffect, useState } from "preact/hooks";
import { ApiKey, del, get, post } from "../api";
import { when } from "../format";

export function KeysPage() {
  const [keys, setKeys] = useState<ApiKey[]>([]);
  const [secret, setSecret] = useState("");
  const [copied, setCopied] = useState(false);
  const [confirming, setConfirming] = useState<ApiKey | null>(null);
  const load = () => get<{ keys: ApiKey[] }>("/v1/account/keys?page_size=200")
    .then((r) => setKeys(r.keys ?? []));
  useEffect(() => { void load(); }, []);
  return (
    <section>
      <h1>API keys</h1>
      <form class="card row" onSubmit={async (event) => {
        event.preventDefault();
        const element = event.currentTarget as HTMLFormElement;  // gone after the first await
        const form = new FormData(element);
        const made = await post<{ secret: string }>("/v1/account/keys",
          { name: form.get("name"), env: form.get("env") });
        setCopied(false);
        setSecret(made.secret);
        element.reset();
        await load();
      }}>
        <label>Name <input name="name" maxLength={100} placeholder="laptop" /></label>
        <label>Environment <select name="env">
          <option value="KEY_ENV_PROD">prod (billed)</option>
          <option value="KEY_ENV_DEV">dev (sandbox quota)</option></select></label>
        <button type="submit">Create key</button>
      </form>
      {secret && (
        <div class="dialog" role="dialog" aria-label="New API key">
          <div class="card">
            <h2>Your new key</h2>
            <p>Copy it now: it is shown only once.</p>
            <code class="secret" data-testid="secret">{secret}</code>
            <div class="row">
              <button onClick={async () => {
                await navigator.clipboard?.writeText(secret).catch(() => undefined);
                setCopied(true);
              }}>{copied ? "Copied" : "Copy"}</button>
              <button class="secondary" onClick={() => setSecret("")}>Done</button>
            </div>
          </div>
        </div>
      )}
      {confirming && (
        <div class="dialog" role="dialog" aria-label="Revoke key">
          <div class="card">
            <h2>Revoke {confirming.prefix}?</h2>
            <p>Calls with this key stop working within seconds. This cannot be undone.</p>
            <div class="row">
              <button class="danger" onClick={async () => {
                await del(`/v1/account/keys/${confirming.key_id}`);
                setConfirming(null);
                await load();
              }}>Revoke</button>
              <button class="secondary" onClick={() => setConfirming(null)}>Cancel</button>
            </div>
          </div>
        </div>
      )}
      <div class="card">
        <table data-testid="keys"><thead><tr><th>Prefix</th><th>Name</th><th>Env</th>
          <th>Created</th><th>Last used</th><th></th></tr></thead>
          <tbody>{keys.map((key) => (
            <tr class={key.revoke_time ? "revoked" : ""}>
              <td><code>{key.prefix}</code></td><td>{key.name}</td>
              <td>{key.env.replace("KEY_ENV_", "").toLowerCase()}</td>
              <td>{when(key.create_time)}</td><td>{when(key.last_used_time)}</td>
              <td>{key.revoke_time ? `revoked ${when(key.revoke_time)}` :
                <button class="danger small" onClick={() => setConfirming(key)}>Revoke</button>}</td>
            </tr>))}</tbody></table>
      </div>
    </section>
  );
}
