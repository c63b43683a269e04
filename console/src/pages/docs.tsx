// Docs: the API reference (docs/api.md, generated from the protos) rendered at build time
// with marked; OpenAPI and llms.txt linked.
import { marked } from "marked";
import reference from "../../../docs/api.md?raw";

const html = marked.parse(reference, { async: false }) as string;

export function DocsPage() {
  return (
    <section>
      <h1>API reference</h1>
      <p class="card">Machine-readable: <a href="/openapi.json">OpenAPI</a> ·{" "}
        <a href="/llms.txt">llms.txt</a> · <a href="/llms-full.txt">llms-full.txt</a></p>
      <article class="card markdown" dangerouslySetInnerHTML={{ __html: html }} />
    </section>
  );
}
