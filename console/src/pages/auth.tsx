// Sign in, sign up and password reset: plain forms; the session is the HttpOnly cookie
// billingd sets, so nothing about it is kept in the page or in storage.
import { useState } from "preact/hooks";
import { ApiError, post } from "../api";
import { Link, navigate } from "../main";

function Form(props: { title: string; submit: string; onSubmit: (form: FormData) => Promise<void>;
                      children: any; footer?: any }) {
  const [error, setError] = useState("");
  const [busy, setBusy] = useState(false);
  return (
    <div class="auth">
      <form class="card" onSubmit={async (event) => {
        event.preventDefault();
        setBusy(true);
        setError("");
        try {
          await props.onSubmit(new FormData(event.currentTarget as HTMLFormElement));
        } catch (caught) {
          setError(caught instanceof ApiError ? caught.message : String(caught));
        } finally {
          setBusy(false);
        }
      }}>
        <h1>ktape</h1>
        <h2>{props.title}</h2>
        {props.children}
        {error && <p class="error" role="alert">{error}</p>}
        <button type="submit" disabled={busy}>{props.submit}</button>
        {props.footer}
      </form>
    </div>
  );
}

export function SignInPage(props: { onSignedIn: () => Promise<void> }) {
  return (
    <Form title="Sign in" submit="Sign in" onSubmit={async (form) => {
      await post("/v1/auth/signin", { email: form.get("email"), password: form.get("password") });
      navigate("/");
      await props.onSignedIn();
    }} footer={<p class="small">New here? <Link href="/signup">Create an account</Link> ·{" "}
      <Link href="/reset">Forgot password</Link> · <Link href="/status">Data status</Link></p>}>
      <label>Email <input name="email" type="email" autocomplete="username" required /></label>
      <label>Password <input name="password" type="password" autocomplete="current-password"
                             required /></label>
    </Form>
  );
}

export function SignUpPage(props: { onSignedIn: () => Promise<void> }) {
  return (
    <Form title="Create an account" submit="Create account" onSubmit={async (form) => {
      await post("/v1/auth/signup", { email: form.get("email"), password: form.get("password") });
      navigate("/");
      await props.onSignedIn();
    }} footer={<p class="small">Have an account? <Link href="/signin">Sign in</Link></p>}>
      <label>Email <input name="email" type="email" autocomplete="username" required /></label>
      <label>Password (at least 10 characters)
        <input name="password" type="password" autocomplete="new-password" minLength={10}
               required /></label>
    </Form>
  );
}

export function ResetPage() {
  const token = new URLSearchParams(location.search).get("token");
  const [done, setDone] = useState("");
  if (done) {
    return <div class="auth"><div class="card"><h2>Password reset</h2><p>{done}</p>
      <Link href="/signin">Sign in</Link></div></div>;
  }
  if (token) {
    return (
      <Form title="Choose a new password" submit="Set password" onSubmit={async (form) => {
        await post("/v1/auth/password-reset:confirm", { token, password: form.get("password") });
        setDone("Your password is set; every other session has been signed out.");
      }}>
        <label>New password <input name="password" type="password" minLength={10}
                                   autocomplete="new-password" required /></label>
      </Form>
    );
  }
  return (
    <Form title="Reset your password" submit="Send reset link" onSubmit={async (form) => {
      await post("/v1/auth/password-reset", { email: form.get("email") });
      setDone("If the email has an account, a reset link is on its way.");
    }} footer={<p class="small"><Link href="/signin">Back to sign in</Link></p>}>
      <label>Email <input name="email" type="email" required /></label>
    </Form>
  );
}
