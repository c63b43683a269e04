"""Generate docs/client-reference.md from ktape-client's docstrings (never written by hand).

Reads the client's source with `ast` instead of importing it: the package's gRPC stubs
exist only once it is built, and the reference must not depend on a build (or on pandas).
Documents every name in `ktape_client.__all__`: classes with their constructor, fields,
properties and public methods, each with its signature and docstring. A public member
without a docstring is an error, so the reference cannot silently lose a method.

    python infra/gen_client_docs.py           # write docs/client-reference.md
    python infra/gen_client_docs.py --check   # fail when it differs from the source
"""

from __future__ import annotations

import ast
import inspect
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "clients" / "python" / "src" / "ktape_client"
OUT = ROOT / "docs" / "client-reference.md"
# Sections in reading order; exported names not listed here go to "Other" (so a new name
# shows up in the reference even before someone places it).
SECTIONS = [
    ("Clients", ["Client", "AsyncClient", "CreatedKey"]),
    ("Datasets", ["AsyncDatasets", "DatasetCost", "DownloadResult", "FileResult"]),
    ("Listings", ["Pages", "AsyncPages"]),
    ("Books and changes", ["Book", "Level", "Continuity", "Change", "Gap"]),
    ("Errors", ["KtapeError", "InvalidArgumentError", "NotFoundError", "AuthenticationError",
                "PermissionDeniedError", "InsufficientCreditsError", "RateLimitedError",
                "SlowConsumerError", "UnavailableError", "DeadlineExceededError", "DownloadError",
                "ChecksumMismatchError"]),
]


MISSING: list[str] = []  # public members found without a docstring


def exported() -> dict[str, str]:
    """`__all__` of the package, each name with the module (file stem) it comes from."""
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    origin: dict[str, str] = {}
    names: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                origin[alias.asname or alias.name] = node.module.rsplit(".", 1)[-1]
        elif isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            names = list(ast.literal_eval(node.value))
    return {name: origin[name] for name in names}


def _doc(node: ast.AST, where: str) -> str:
    text = ast.get_docstring(node)  # type: ignore[arg-type]
    if not text:
        MISSING.append(where)
        return ""
    return inspect.cleandoc(text)


def _signature(fn: ast.FunctionDef | ast.AsyncFunctionDef, name: str) -> str:
    args = fn.args
    if args.args and args.args[0].arg in ("self", "cls"):
        args = ast.arguments(posonlyargs=args.posonlyargs, args=args.args[1:],
                             vararg=args.vararg, kwonlyargs=args.kwonlyargs,
                             kw_defaults=args.kw_defaults, kwarg=args.kwarg,
                             defaults=args.defaults)
    returns = f" -> {ast.unparse(fn.returns)}" if fn.returns else ""
    prefix = "async " if isinstance(fn, ast.AsyncFunctionDef) else ""
    return f"{prefix}{name}({ast.unparse(args)}){returns}"


def _is_property(fn: ast.AST) -> bool:
    return any(isinstance(d, ast.Name) and d.id == "property"
               for d in getattr(fn, "decorator_list", []))


def _is_dataclass(cls: ast.ClassDef) -> bool:
    return any("dataclass" in ast.unparse(d) for d in cls.decorator_list)


def render_class(cls: ast.ClassDef, module: str) -> list[str]:
    bases = [ast.unparse(b) for b in cls.bases if not ast.unparse(b).startswith("_")]
    head = f"### `{cls.name}`" + (f" ({', '.join(f'`{b}`' for b in bases)})" if bases else "")
    out = [head, "", f"*`ktape_client.{module}`*", "", _doc(cls, cls.name), ""]
    fields = [n for n in cls.body if isinstance(n, ast.AnnAssign)
              and isinstance(n.target, ast.Name) and not n.target.id.startswith("_")]
    if _is_dataclass(cls) and fields:
        out += ["Fields:", ""]
        for f in fields:
            default = f" = {ast.unparse(f.value)}" if f.value is not None else ""
            out.append(f"- `{f.target.id}: {ast.unparse(f.annotation)}{default}`")  # type: ignore[union-attr]
        out.append("")
    for node in cls.body:
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        if node.name == "__init__":
            out += ["```python", _signature(node, cls.name), "```", ""]
            continue
        if node.name.startswith("_"):
            continue
        where = f"{cls.name}.{node.name}"
        if _is_property(node):
            out += [f"- **`{node.name}`** (property): {_doc(node, where)}".replace("\n", " ")]
            continue
        out += [f"#### `{cls.name}.{node.name}`", "", "```python",
                _signature(node, node.name), "```", "", _doc(node, where), ""]
    if out[-1] != "":
        out.append("")
    return out


def render() -> str:
    names = exported()
    placed = [n for _, group in SECTIONS for n in group]
    unknown = [n for n in placed if n not in names]
    if unknown:
        raise SystemExit(f"gen_client_docs: not exported any more: {', '.join(unknown)}")
    sections = [*SECTIONS, ("Other", sorted(n for n in names if n not in placed))]
    trees = {m: ast.parse((PACKAGE / f"{m}.py").read_text()) for m in set(names.values())}
    package_doc = inspect.cleandoc(ast.get_docstring(ast.parse(
        (PACKAGE / "__init__.py").read_text())) or "")
    out = ["# ktape-client API reference", "",
           "Generated from the docstrings of `clients/python/src/ktape_client` by",
           "`infra/gen_client_docs.py` (`make docs`; `make lint` fails when it is stale).",
           "The guide with examples is [client.md](client.md).", "", "```python",
           package_doc.split("\n", 1)[1].strip() if "\n" in package_doc else "", "```", ""]
    for title, group in sections:
        if not group:
            continue
        out += [f"## {title}", ""]
        for name in group:
            module = names[name]
            node = next((n for n in trees[module].body if isinstance(n, ast.ClassDef)
                         and n.name == name), None)
            if node is None:
                raise SystemExit(f"gen_client_docs: no class {name} in {module}.py")
            out += render_class(node, module)
    return "\n".join(out).rstrip() + "\n"


def main() -> int:
    text = render()
    if MISSING:
        print(f"gen_client_docs: no docstring (the reference needs one): {', '.join(MISSING)}",
              file=sys.stderr)
        return 1
    if "--check" in sys.argv:
        if not OUT.exists() or OUT.read_text() != text:
            print("docs/client-reference.md is stale: run `make docs`", file=sys.stderr)
            return 1
        print("docs/client-reference.md matches the client's docstrings")
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
