// The console's shell: session, sidebar (collapsed behind a menu button on a phone) and
// a router over the History API. Pages live in ./pages; each fetches what it shows.
import { render } from "preact";
import { useEffect, useState } from "preact/hooks";
import "uplot/dist/uPlot.min.css";
import "./styles.css";
import { ApiError, get, post, Session, setCsrf } from "./api";
import { Admin } from "./pages/admin";
import { ResetPage, SignInPage, SignUpPage } from "./pages/auth";
import { BillingPage } from "./pages/billing";
import { DocsPage } from "./pages/docs";
import { KeysPage } from "./pages/keys";
import { Overview } from "./pages/overview";
import { Playground } from "./pages/playground";
import { StatusPage } from "./pages/status";

export function navigate(path: string): void {
  history.pushState(null, "", path);
  dispatchEvent(new PopStateEvent("popstate"));
}

function usePath(): string {
  const [path, setPath] = useState(location.pathname);
  useEffect(() => {
    const update = () => setPath(location.pathname);
    addEventListener("popstate", update);
    return () => removeEventListener("popstate", update);
  }, []);
  return path;
}

const PAGES: { path: string; label: string; admin?: boolean }[] = [
  { path: "/", label: "Overview" },
  { path: "/keys", label: "API keys" },
  { path: "/billing", label: "Billing" },
  { path: "/playground", label: "Playground" },
  { path: "/status", label: "Status" },
  { path: "/docs", label: "Docs" },
  { path: "/admin", label: "Admin", admin: true },
];

const PUBLIC = new Set(["/signin", "/signup", "/reset", "/status", "/docs"]);

export function Link(props: { href: string; class?: string; children: any }) {
  return (
    <a href={props.href} class={props.class} onClick={(event) => {
      event.preventDefault();
      navigate(props.href);
    }}>{props.children}</a>
  );
}

function App() {
  const path = usePath();
  const [session, setSession] = useState<Session | null | undefined>(undefined);
  const [admin, setAdmin] = useState(false);
  const [menuOpen, setMenuOpen] = useState(false);

  const refresh = async () => {
    // The HttpOnly session cookie is invisible here; its readable companion says whether
    // asking for the session can succeed (a signed-out page makes no failing request).
    if (!document.cookie.split("; ").includes("ktape_signed_in=1")) {
      setSession(null);
      return;
    }
    try {
      const found = await get<Session>("/v1/auth/session");
      setCsrf(found.csrf_token);
      setSession(found);
      const account = await get<{ account: { admin: boolean } }>("/v1/account");
      setAdmin(account.account.admin);
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) {
        document.cookie = "ktape_signed_in=; Max-Age=0; Path=/";  // the session expired
        setSession(null);
      } else throw error;
    }
  };
  useEffect(() => { void refresh(); }, []);
  useEffect(() => setMenuOpen(false), [path]);

  if (session === undefined) return <div class="loading">Loading…</div>;
  if (session === null && !PUBLIC.has(path)) {
    if (path !== "/") history.replaceState(null, "", "/signin");
    return <SignInPage onSignedIn={refresh} />;
  }
  if (path === "/signin") return <SignInPage onSignedIn={refresh} />;
  if (path === "/signup") return <SignUpPage onSignedIn={refresh} />;
  if (path === "/reset") return <ResetPage />;

  const signOut = async () => {
    await post("/v1/auth/signout");
    setCsrf("");
    setSession(null);
    navigate("/signin");
  };
  const page = (() => {
    switch (path) {
      case "/": return <Overview />;
      case "/keys": return <KeysPage />;
      case "/billing": case "/billing/success": return <BillingPage />;
      case "/playground": return <Playground />;
      case "/status": return <StatusPage />;
      case "/docs": return <DocsPage />;
      case "/admin": return admin ? <Admin /> : <div class="card error">Admin accounts only.</div>;
      default: return <div class="card">No such page. <Link href="/">Overview</Link></div>;
    }
  })();
  return (
    <div class={`shell ${menuOpen ? "menu-open" : ""}`}>
      <header class="topbar">
        <button class="menu" aria-label="Menu" aria-expanded={menuOpen}
                onClick={() => setMenuOpen(!menuOpen)}>☰</button>
        <span class="brand">ktape</span>
        <span class="who">{session ? session.email : <Link href="/signin">Sign in</Link>}</span>
        {session && <button class="link" onClick={signOut}>Sign out</button>}
      </header>
      <nav class="sidebar" aria-label="Pages">
        {PAGES.filter((p) => (!p.admin || admin) && (session || PUBLIC.has(p.path))).map((p) => (
          <Link href={p.path} class={path === p.path ? "active" : ""}>{p.label}</Link>
        ))}
      </nav>
      <main class="content">{page}</main>
    </div>
  );
}

render(<App />, document.getElementById("app")!);
