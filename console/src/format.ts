// Exact numbers: the API's decimal strings are shown as sent, and arithmetic on them
// (depth sums, running totals) is done on scaled integers (BigInt), never on floats.
// Only chart coordinates become JavaScript numbers.

export function scaled(text: string, digits: number): bigint {
  const negative = text.startsWith("-");
  const body = negative || text.startsWith("+") ? text.slice(1) : text;
  const [whole, frac = ""] = body.split(".");
  const value = BigInt(whole || "0") * 10n ** BigInt(digits) +
    BigInt((frac + "0".repeat(digits)).slice(0, digits) || "0");
  return negative ? -value : value;
}

export function unscaled(value: bigint, digits: number): string {
  const negative = value < 0n;
  const abs = negative ? -value : value;
  const base = 10n ** BigInt(digits);
  const frac = (abs % base).toString().padStart(digits, "0");
  return `${negative ? "-" : ""}${abs / base}${digits ? "." + frac : ""}`;
}

export function credits(text: string | undefined): string {
  const value = BigInt(text ?? "0");
  return value.toLocaleString("en-US");
}

export function dollars(cents: string): string {
  return `$${unscaled(BigInt(cents), 2)}`;
}

export function when(text: string | undefined): string {
  if (!text) return "—";
  return text.replace("T", " ").replace(/\.\d+Z$/, "Z").replace(/Z$/, " UTC");
}

export function continuityLabel(status: string): string {
  return status.replace("CONTINUITY_STATUS_", "");
}

export function short(method: string): string {
  return method.split("/").pop() ?? method;
}

// Milliseconds of an RFC 3339 time as the API prints it (fractions beyond milliseconds,
// which protobuf JSON may carry, are dropped: Date.parse is only specified for three).
export function millis(text: string): number {
  return Date.parse(text.replace(/(\.\d{3})\d+/, "$1"));
}

// A length of time as a person reads it: "850 ms", "12.4 s", "3 min 5 s", "2 h 10 min".
export function duration(ms: number): string {
  if (ms < 1000) return `${Math.max(0, Math.round(ms))} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  const secs = Math.round(ms / 1000);
  if (secs < 3600) return `${Math.floor(secs / 60)} min ${secs % 60} s`;
  const mins = Math.round(secs / 60);
  if (mins < 1440) return `${Math.floor(mins / 60)} h ${mins % 60} min`;
  return `${Math.floor(mins / 1440)} d ${Math.floor((mins % 1440) / 60)} h`;
}
